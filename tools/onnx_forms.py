#!/usr/bin/python3
"""ONNX fixtures for the importer's equivalent forms: the GoogLeNet-tiny network of tools/reference.py exported by
PyTorch in several opsets and head spellings, and two graphs rewritten with onnx.helper into the rarer forms that
other exporters and optimisers write. Each comes with the outputs its PyTorch source computes.

Usage (Debian's interpreter: /usr/bin/python3 has torch, onnx and numpy):
  tools/onnx_forms.py OUTDIR [--config configs/googlenet-tiny.cfg] [--input tests/data/googlenet-tiny/input.npy]

Writes, for each form NAME: OUTDIR/NAME.onnx, NAME.logits.npy (the main classifier's logits), NAME.out.npy (the
graph's first output: softmax or log-softmax of the logits), and NAME.loss1.npy, NAME.loss2.npy when the graph has
the auxiliary heads as extra outputs. The forms:
  opset7   opset 7: AdaptiveAvgPool2d(1) (GlobalAveragePool), x.view(x.size(0), -1) (a Reshape whose shape is
           computed: Shape, Gather, Unsqueeze, Concat), Linear (Gemm), LogSoftmax; auxiliary heads (AveragePool
           with explicit end pads, opset < 10 has no ceil_mode)
  opset9   opset 9: x.mean((2, 3), keepdim=True) (ReduceMean), squeeze(3).squeeze(2) (Squeeze, axes attribute),
           matmul + add (MatMul + Add), Softmax; no auxiliary heads
  opset13  opset 13: x.mean((2, 3)) (ReduceMean, keepdims 0: no flatten at all), Linear, Softmax; auxiliary heads
  opset17  opset 17: AdaptiveAvgPool2d(1), squeeze(-1).squeeze(-1) (Squeeze, axes as an input), matmul + add,
           LogSoftmax; no auxiliary heads
  rare7    opset7 rewritten, old-style: Relu as Clip(min=0) attributes, Dropout (ratio attribute) and Identity
           nodes, a Pad of zeros (pads attribute) before a MaxPool, LRN attributes in reverse order, Gemm with
           transB = 0, initializers alternately raw_data / float_data and some as Constant nodes, a Reshape whose
           shape is a Constant node, every tensor and node named by a number
  rare13   opset13 rewritten, new-style: Clip(x, 0) and Clip(x, 0, +inf) with inputs, Dropout with ratio and
           training_mode inputs, a Pad whose pads are an input, a Constant with value_ints, a FusedConv with a
           Relu activation (ONNX Runtime's optimised graphs), the rest as rare7
"""
import argparse
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper, TensorProto

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402


FORMS = {  # name: opset, pool, flatten, fc, head, aux, seed
    'opset7': (7, 'gap', 'view', 'linear', 'logsoftmax', True, 7),
    'opset9': (9, 'mean-keep', 'squeeze', 'matmul', 'softmax', False, 9),
    'opset13': (13, 'mean', 'none', 'linear', 'softmax', True, 13),
    'opset17': (17, 'gap', 'squeeze-neg', 'matmul', 'logsoftmax', False, 17),
}
REWRITES = {'rare7': 'opset7', 'rare13': 'opset13'}


class Variant(torch.nn.Module):
    """tools/reference.py's GoogLeNet with the head (final pooling, flatten, classifier, softmax) spelled another way."""

    def __init__(self, model, pool, flat, fc, head):
        super().__init__()
        self.m, self.pool, self.flat, self.fc, self.head = model, pool, flat, fc, head

    def forward(self, x, taps=None):
        aux, logits = [], None
        for d in self.m.spec:
            key, kind = d['name'].replace('.', '_'), d['kind']
            if kind == 'avgpool':
                if self.pool == 'gap':
                    x = F.adaptive_avg_pool2d(x, 1)
                elif self.pool == 'mean-keep':
                    x = x.mean((2, 3), keepdim=True)
                elif self.pool == 'mean':
                    x = x.mean((2, 3))
                else:
                    x = F.avg_pool2d(x, d['k'], d['stride'], 0, ceil_mode=True)
            elif kind == 'fc':
                if self.flat == 'view':
                    x = x.view(x.size(0), -1)
                elif self.flat == 'squeeze':
                    x = x.squeeze(3).squeeze(2)
                elif self.flat == 'squeeze-neg':
                    x = x.squeeze(-1).squeeze(-1)
                lin = self.m.mods[key]
                x = lin(x) if self.fc == 'linear' else torch.matmul(x, lin.weight.t()) + lin.bias
                logits = x
            elif kind == 'softmax':
                x = F.log_softmax(x, 1) if self.head == 'logsoftmax' else F.softmax(x, 1)
            elif kind == 'aux':
                if self.m.with_aux:
                    aux.append(self.m.mods[key](x))
            elif kind == 'dropout':
                pass  # eval mode
            else:
                x = layer(self.m, d, x)
        return (x, *aux) if taps is None else (x, logits, *aux)


def layer(m, d, x):
    """One trunk layer as tools/reference.py computes it."""
    key, kind = d['name'].replace('.', '_'), d['kind']
    if kind == 'conv':
        if 'reduce' in d:
            x = m.mods[key + '_reduce'](x)
        return m.mods[key](x)
    if kind == 'maxpool':
        return F.max_pool2d(x, d['k'], d['stride'], d.get('pad', 0), ceil_mode=True)
    if kind == 'lrn':
        lrn = R.LRN.apply if torch.onnx.is_in_onnx_export() else F.local_response_norm
        return lrn(x, d.get('size', 5), d.get('alpha', 1e-4), d.get('beta', 0.75), d.get('k', 1.0))
    if kind == 'inception':
        return m.mods[key](x)
    raise ValueError('unexpected layer kind ' + kind)


def export_form(config, x, outdir, name, opset, pool, flat, fc, head, with_aux, seed):
    net, spec, model = R.build(config, seed, with_aux)
    v = Variant(model, pool, flat, fc, head).eval()
    with torch.no_grad():
        out, logits, *aux = v(x, taps=True)
    np.save(os.path.join(outdir, name + '.out.npy'), out.numpy().astype(np.float32))
    np.save(os.path.join(outdir, name + '.logits.npy'), logits.numpy().astype(np.float32))
    for i, a in enumerate(aux):
        np.save(os.path.join(outdir, '%s.loss%d.npy' % (name, i + 1)), a.numpy().astype(np.float32))
    outputs = ['out'] + (['loss1', 'loss2'] if with_aux else [])
    axes = {k: {0: 'N'} for k in ['data'] + outputs}
    path = os.path.join(outdir, name + '.onnx')
    torch.onnx.export(v, x[:1], path, opset_version=opset, input_names=['data'], output_names=outputs,
                      dynamic_axes=axes, do_constant_folding=True)
    return path


# ---------------------------------------------------------------------------------------------------------------
# the rarer forms, by rewriting an export (same math, so the source's outputs still hold)

def rewrite(src, dst, opset):
    m = onnx.load(src)
    g = m.graph
    old = opset < 11
    counter = [0]

    def fresh(base):
        counter[0] += 1
        return '%s_rw%d' % (base, counter[0])

    consts = []  # Constant nodes to put first

    def const(name, value, as_ints=False):
        if as_ints and not old:
            consts.append(helper.make_node('Constant', [], [name], value_ints=list(int(v) for v in value)))
        else:
            consts.append(helper.make_node('Constant', [], [name], value=numpy_helper.from_array(np.asarray(value), name)))
        return name

    inits = {t.name: t for t in g.initializer}
    nodes = []
    relu_i = conv_relu_fused = 0
    producers = {o: n for n in g.node for o in n.output}
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == 'Relu':
            relu_i += 1
            src_node = producers.get(node.input[0])
            if not old and not conv_relu_fused and src_node is not None and src_node.op_type == 'Conv':
                # fused by an optimiser: the Conv itself becomes FusedConv with a Relu activation
                conv_relu_fused = 1
                src_node.op_type, src_node.domain = 'FusedConv', 'com.microsoft'
                src_node.attribute.append(helper.make_attribute('activation', 'Relu'))
                src_node.output[0] = node.output[0]
                continue
            if relu_i % 2 == 0:
                if old:
                    nodes.append(helper.make_node('Clip', node.input, node.output, name=node.name, min=0.0))
                else:
                    zero = const(fresh('zero'), np.array(0, np.float32))
                    ins = [node.input[0], zero]
                    if relu_i % 4 == 0:
                        ins.append(const(fresh('inf'), np.array(np.inf, np.float32)))
                    nodes.append(helper.make_node('Clip', ins, node.output, name=node.name))
                continue
        if node.op_type == 'LRN':  # attributes in reverse order
            node.attribute.reverse()
        if node.op_type == 'Gemm' and attrs.get('transB', 0):
            w = inits[node.input[1]]
            w.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w).T), w.name))
            del node.attribute[:]
            node.attribute.extend([helper.make_attribute('alpha', 1.0), helper.make_attribute('transB', 0)])
        if node.op_type == 'MaxPool' and attrs.get('kernel_shape') == [3, 3] and attrs.get('strides') == [1, 1]:
            # a Pad of zeros and an Identity in front of every Inception module's pool
            padded, ident = fresh('padded'), fresh('ident')
            if old:
                nodes.append(helper.make_node('Pad', [node.input[0]], [padded], pads=[0] * 8))
            else:
                nodes.append(helper.make_node('Pad', [node.input[0], const(fresh('pads'), np.zeros(8, np.int64))],
                                              [padded]))
            nodes.append(helper.make_node('Identity', [padded], [ident]))
            node.input[0] = ident
        if node.op_type == 'Concat' and len(node.input) == 4:
            # a Dropout (inference: the identity) on each branch of each module
            for i in range(4):
                dropped = fresh('dropped')
                if old:
                    nodes.append(helper.make_node('Dropout', [node.input[i]], [dropped], ratio=0.4))
                else:
                    nodes.append(helper.make_node('Dropout', [node.input[i], const(fresh('ratio'), np.array(0.4, np.float32)),
                                                              const(fresh('train'), np.array(False))], [dropped, fresh('mask')]))
                node.input[i] = dropped
        if node.op_type == 'Flatten':  # a Reshape whose shape is a Constant node
            flat = fresh('shape')
            const(flat, np.array([0, -1], np.int64), as_ints=True)
            nodes.append(helper.make_node('Reshape', [node.input[0], flat], node.output, name=node.name))
            continue
        nodes.append(node)
    # initializers: every third a Constant node, the rest alternately raw_data and float_data
    kept = []
    for i, t in enumerate(g.initializer):
        if i % 3 == 2:
            consts.append(helper.make_node('Constant', [], [t.name], value=t))
            continue
        if i % 3 == 1:
            values = numpy_helper.to_array(t).astype(np.float32).ravel()
            t.ClearField('raw_data')
            t.float_data.extend(values.tolist())
        kept.append(t)
    del g.initializer[:]
    g.initializer.extend(kept)
    names = {t.name for t in kept}  # IR 3 lists initializers among the inputs: the moved ones are inputs no more
    inputs = [vi for vi in g.input if vi.name in names or vi.name not in inits]
    del g.input[:]
    g.input.extend(inputs)
    del g.node[:]
    g.node.extend(consts + nodes)
    # every tensor and node named by a number (what some exporters write); the graph's input and outputs too
    numbers = {}

    def num(name):
        if name == '':
            return name
        if name not in numbers:
            numbers[name] = str(1000 + len(numbers))
        return numbers[name]
    for n in g.node:
        n.name = num('node:' + n.name) if n.name else ''
        for i, s in enumerate(n.input):
            n.input[i] = num(s)
        for i, s in enumerate(n.output):
            n.output[i] = num(s)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                a.t.name = num(a.t.name)
    for t in g.initializer:
        t.name = num(t.name)
    for vi in list(g.input) + list(g.output):
        vi.name = num(vi.name)
    del g.value_info[:]
    if not old:
        m.opset_import.append(helper.make_opsetid('com.microsoft', 1))
    onnx.save(m, dst)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('outdir')
    p.add_argument('--config', default='configs/googlenet-tiny.cfg')
    p.add_argument('--input', default='tests/data/googlenet-tiny/input.npy')
    a = p.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    x = torch.from_numpy(np.load(a.input))
    for name, form in FORMS.items():
        export_form(a.config, x, a.outdir, name, *form)
    for name, base in REWRITES.items():
        rewrite(os.path.join(a.outdir, base + '.onnx'), os.path.join(a.outdir, name + '.onnx'), FORMS[base][0])
        for suffix in ('logits', 'out', 'loss1', 'loss2'):
            src = os.path.join(a.outdir, '%s.%s.npy' % (base, suffix))
            if os.path.exists(src):
                np.save(os.path.join(a.outdir, '%s.%s.npy' % (name, suffix)), np.load(src))
    print('wrote %s: %s' % (a.outdir, ', '.join(list(FORMS) + list(REWRITES))), file=sys.stderr)


if __name__ == '__main__':
    main()
