#!/usr/bin/python3
"""The independent reference for the C network: the same GoogLeNet, built in PyTorch from the same config file.

Usage (Debian's interpreter: /usr/bin/python3 has torch, onnx and numpy):
  tools/reference.py fixtures CONFIG OUTDIR [--seed S] [--batch N] [--no-aux] [--bvlc]
      builds the network with a fixed seed, exports it to OUTDIR/model.onnx (opset 11, dynamic batch; the
      auxiliary heads as extra outputs unless --no-aux) and writes OUTDIR/input.npy and one .npy per layer output
      (named as `inception forward --layer` names them, '/' written as '.'). --bvlc also writes
      OUTDIR/model-bvlc.onnx: the same network without the auxiliary heads, laid out as the public
      bvlc_googlenet export is (Caffe initializer
      names, MaxPool with explicit end padding instead of ceil_mode, Reshape instead of Flatten, MatMul + Add
      instead of Gemm, a Dropout node, a final Softmax).
  tools/reference.py export CONFIG OUT.onnx [--seed S] [--no-aux] [--bvlc]
      the ONNX model only (for benchmarks).
  tools/reference.py other-topology OUT.onnx
      a small residual network that is not GoogLeNet (tests/data/other-topology.onnx: the importer must refuse it).

The network follows the paper (Table 1, Figure 3) as the C code does: convolutions with ReLU, Caffe ceil-mode
pooling, LRN (size 5, alpha 1e-4, beta 0.75, k 1: PyTorch's LocalResponseNorm divides alpha by size as Caffe
does), Inception modules concatenating [1x1, 3x3, 5x5, pool proj], auxiliary heads after 4a and 4d.
"""
import argparse
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------------------------
# config: the same format as src/classifier/config.c reads (this parser is deliberately small: the C parser is
# the strict one; configs reaching here have passed it in the tests)

def parse_config(path):
    net, layers, section = {}, [], None
    for raw in open(path):
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        if line.startswith('['):
            section = line
            continue
        if section == '[net]':
            k, v = (s.strip() for s in line.split('=', 1))
            net[k] = v
            continue
        tok = line.split()
        layers.append((tok[0], tok[1], tok[2:]))
    width = float(net.get('width', 1))
    classes = int(net['classes'])

    def ch(s):
        if s == 'classes':
            return classes
        return max(1, int(math.floor(int(s) * width + 0.5)))  # lround, as the C parser

    spec = []
    for kind, name, rest in layers:
        d = {'kind': kind, 'name': name}
        if kind == 'inception':
            d['cols'] = [ch(s) for s in rest]
        else:
            if kind in ('conv', 'maxpool', 'avgpool'):
                m = re.fullmatch(r'(\d+)x(\d+)/(\d+)', rest[0])
                d['k'], d['stride'] = int(m.group(1)), int(m.group(3))
                rest = rest[1:]
            for kv in rest:
                k, v = kv.split('=')
                if k in ('out', 'reduce', 'conv', 'fc'):
                    d[k] = ch(v)
                elif k == 'pool':
                    m = re.fullmatch(r'(\d+)x(\d+)/(\d+)', v)
                    d['pool'] = (int(m.group(1)), int(m.group(3)))
                elif k in ('pad', 'size'):
                    d[k] = int(v)
                else:
                    d[k] = float(v)
        spec.append(d)
    return {'input': int(net['input']), 'channels': int(net.get('channels', 3)), 'classes': classes}, spec


# ---------------------------------------------------------------------------------------------------------------
# the network

class LRN(torch.autograd.Function):
    """PyTorch's local_response_norm, exported as ONNX's LRN node (PyTorch would export its decomposition)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op('LRN', x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class ConvReLU(nn.Module):
    def __init__(self, cin, cout, k, stride=1, pad=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, pad)

    def forward(self, x):
        return F.relu(self.conv(x))


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
        super().__init__()
        self.b1 = ConvReLU(cin, c1, 1)
        self.b3r, self.b3 = ConvReLU(cin, c3r, 1), ConvReLU(c3r, c3, 3, 1, 1)
        self.b5r, self.b5 = ConvReLU(cin, c5r, 1), ConvReLU(c5r, c5, 5, 1, 2)
        self.proj = ConvReLU(cin, cp, 1)

    def forward(self, x):
        pooled = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
        return torch.cat([self.b1(x), self.b3(self.b3r(x)), self.b5(self.b5r(x)), self.proj(pooled)], 1)


class Aux(nn.Module):
    def __init__(self, cin, hw, k, stride, conv, fc, classes, p):
        super().__init__()
        self.k, self.stride = k, stride
        self.conv = ConvReLU(cin, conv, 1)
        out = math.ceil((hw - k) / stride) + 1
        self.fc = nn.Linear(conv * out * out, fc)
        self.drop = nn.Dropout(p)
        self.classifier = nn.Linear(fc, classes)

    def forward(self, x):
        x = F.avg_pool2d(x, self.k, self.stride, ceil_mode=True)
        x = torch.flatten(self.conv(x), 1)
        return self.classifier(self.drop(F.relu(self.fc(x))))


class GoogLeNet(nn.Module):
    def __init__(self, net, spec, with_aux=True):
        super().__init__()
        self.spec, self.with_aux = spec, with_aux
        self.mods = nn.ModuleDict()
        c, hw = net['channels'], net['input']
        for d in spec:
            key = d['name'].replace('.', '_')
            kind = d['kind']
            if kind == 'conv':
                pad = d.get('pad', 0)
                if 'reduce' in d:
                    self.mods[key + '_reduce'] = ConvReLU(c, d['reduce'], 1)
                    c = d['reduce']
                self.mods[key] = ConvReLU(c, d['out'], d['k'], d['stride'], pad)
                c = d['out']
                hw = (hw + 2 * pad - d['k']) // d['stride'] + 1
            elif kind in ('maxpool', 'avgpool'):
                pad = d.get('pad', 0)
                out = math.ceil((hw + 2 * pad - d['k']) / d['stride']) + 1
                if pad and (out - 1) * d['stride'] >= hw + pad:
                    out -= 1
                hw = out
            elif kind == 'inception':
                self.mods[key] = Inception(c, *d['cols'])
                c1, _, c3, _, c5, cp = d['cols']
                c = c1 + c3 + c5 + cp
            elif kind == 'aux' and with_aux:
                self.mods[key] = Aux(c, hw, d['pool'][0], d['pool'][1], d['conv'], d['fc'], net['classes'],
                                     d.get('dropout', 0.7))
            elif kind == 'fc':
                self.mods[key] = nn.Linear(c * hw * hw, d['out'])
                c, hw = d['out'], 1

    def forward(self, x, taps=None):
        """Returns (logits, aux logits...); with a dict `taps`, also every layer's output by name."""
        def tap(name, v):
            if taps is not None:
                taps[name] = v
            return v
        aux = []
        for d in self.spec:
            key, kind = d['name'].replace('.', '_'), d['kind']
            if kind == 'conv':
                if 'reduce' in d:
                    x = tap(d['name'] + '/reduce', self.mods[key + '_reduce'](x))
                x = self.mods[key](x)
            elif kind == 'maxpool':
                x = F.max_pool2d(x, d['k'], d['stride'], d.get('pad', 0), ceil_mode=True)
            elif kind == 'avgpool':
                x = F.avg_pool2d(x, d['k'], d['stride'], d.get('pad', 0), ceil_mode=True)
            elif kind == 'lrn':
                # exported as one ONNX LRN node; differentiable (tools/train_reference.py) as PyTorch's own
                lrn = LRN.apply if torch.onnx.is_in_onnx_export() else F.local_response_norm
                x = lrn(x, d.get('size', 5), d.get('alpha', 1e-4), d.get('beta', 0.75), d.get('k', 1.0))
            elif kind == 'inception':
                x = self.mods[key](x)
            elif kind == 'aux':
                if self.with_aux:
                    aux.append(tap(d['name'], self.mods[key](x)))
                continue
            elif kind == 'dropout':
                x = F.dropout(x, d['p'], self.training)
            elif kind == 'fc':
                x = self.mods[key](torch.flatten(x, 1))
                logits = x
            elif kind == 'softmax':
                x = F.softmax(x, 1)
            tap(d['name'], x)
        return (logits, *aux)


def build(config, seed, with_aux=True):
    net, spec = parse_config(config)
    torch.manual_seed(seed)
    model = GoogLeNet(net, spec, with_aux)
    # He-normal weights and small positive biases: activations keep their scale through the depth, so every
    # layer's output is a meaningful comparison (and the LRNs see values large enough to matter).
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity='relu')
            nn.init.uniform_(m.bias, 0.0, 0.1)
    return net, spec, model.eval()


def export(model, net, path, with_aux):
    x = torch.zeros(1, net['channels'], net['input'], net['input'])
    outputs = ['logits'] + (['loss1', 'loss2'] if with_aux else [])
    axes = {'data': {0: 'N'}}
    axes.update({o: {0: 'N'} for o in outputs})
    torch.onnx.export(model, x, path, opset_version=11, input_names=['data'], output_names=outputs,
                      dynamic_axes=axes, do_constant_folding=True)


# ---------------------------------------------------------------------------------------------------------------
# the bvlc_googlenet layout

def to_bvlc(src, dst, net, spec):
    """Rewrites our PyTorch export into the layout of the public Caffe-converted GoogLeNet (the ONNX model zoo's
    bvlc_googlenet, opset 3..9): same math, old-style graph. Caffe initializer names, listed among the graph
    inputs as IR version 3 files do; MaxPool with explicit end padding instead of ceil_mode; no Pad nodes;
    Reshape with its shape as an attribute (opset < 5) instead of Flatten; MatMul + Add instead of Gemm; biases
    stored as float_data rather than raw_data; a Dropout (is_test) before the classifier; a final Softmax."""
    import onnx
    from onnx import helper, numpy_helper, TensorProto
    m = onnx.load(src)
    g = m.graph
    # shapes, to turn ceil_mode into explicit end padding and to size the Reshape
    inferred = onnx.shape_inference.infer_shapes(m)
    dims = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {t.name: t for t in g.initializer}
    # Caffe-style initializer names, in graph order
    counter, rename = {}, {}
    for node in g.node:
        if node.op_type in ('Conv', 'Gemm'):
            counter[node.op_type] = counter.get(node.op_type, 0) + 1
            for i, suffix in ((1, 'w_0'), (2, 'b_0')):
                if len(node.input) > i and node.input[i] in inits:
                    rename[node.input[i]] = '%s%d/%s' % (node.op_type.lower(), counter[node.op_type], suffix)
    inits = {rename.get(k, k): v for k, v in inits.items()}  # by their new names
    # Pads of zeros (PyTorch's, before AveragePool) go; their readers read what the Pad read
    bypass = {n.output[0]: n.input[0] for n in g.node if n.op_type == 'Pad'}
    new_nodes = []
    for node in g.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(bypass.get(name, name), bypass.get(name, name))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ('Pad', 'Constant'):
            continue
        if node.op_type == 'MaxPool' and attrs.get('ceil_mode', 0) == 1:
            h = dims[node.input[0]][2]
            k, s = attrs['kernel_shape'][0], attrs['strides'][0]
            pads = list(attrs.get('pads', [0, 0, 0, 0]))
            out = math.ceil((h + pads[0] + pads[2] - k) / s) + 1
            extra = max(0, (out - 1) * s + k - (h + pads[0] + pads[2]))
            pads = [pads[0], pads[1], pads[2] + extra, pads[3] + extra]
            new_nodes.append(helper.make_node('MaxPool', node.input, node.output, name=node.name,
                                              kernel_shape=[k, k], strides=[s, s], pads=pads))
        elif node.op_type == 'AveragePool':
            new_nodes.append(helper.make_node('AveragePool', node.input, node.output, name=node.name,
                                              kernel_shape=attrs['kernel_shape'], strides=attrs['strides']))
        elif node.op_type == 'Flatten':
            d = dims[node.input[0]]
            new_nodes.append(helper.make_node('Reshape', [node.input[0]], node.output, name=node.name,
                                              shape=[-1, d[1] * d[2] * d[3]]))
        elif node.op_type == 'Gemm':
            w = numpy_helper.to_array(inits[node.input[1]])
            if attrs.get('transB', 0):
                w = w.T
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w), node.input[1]))
            mid = node.output[0] + '_matmul'
            new_nodes.append(helper.make_node('MatMul', [node.input[0], node.input[1]], [mid]))
            new_nodes.append(helper.make_node('Add', [mid, node.input[2]], node.output, broadcast=1))
        else:
            new_nodes.append(node)
    for t in g.initializer:
        old = t.name
        t.name = rename.get(old, old)
        if t.name.endswith('b_0'):  # biases as float_data
            values = numpy_helper.to_array(t).astype(np.float32).ravel()
            t.ClearField('raw_data')
            t.float_data.extend(values.tolist())
    # a Dropout before the main classifier (the last MatMul: the auxiliary heads run earlier), a final Softmax
    last_matmul = [n for n in new_nodes if n.op_type == 'MatMul'][-1]
    final = []
    for node in new_nodes:
        if node is last_matmul:
            dropped = node.input[0] + '_drop'
            final.append(helper.make_node('Dropout', [node.input[0]], [dropped, dropped + '_mask'], ratio=0.4,
                                          is_test=1))
            node.input[0] = dropped
        final.append(node)
    final.append(helper.make_node('Softmax', [g.output[0].name], ['prob'], axis=1))
    del g.node[:]
    g.node.extend(final)
    out0 = helper.make_tensor_value_info('prob', TensorProto.FLOAT, ['N', net['classes']])
    rest = list(g.output)[1:]
    del g.output[:]
    g.output.extend([out0] + rest)
    del g.value_info[:]
    for t in g.initializer:  # IR version 3: initializers are graph inputs too
        g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    m.ir_version = 3
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid('', 4))
    onnx.save(m, dst)


# ---------------------------------------------------------------------------------------------------------------

def cmd_fixtures(a):
    os.makedirs(a.outdir, exist_ok=True)
    net, spec, model = build(a.config, a.seed, not a.no_aux)
    g = torch.Generator().manual_seed(a.seed + 1)
    # mean-subtracted pixels are about +-60; this scale makes the LRNs' normalisation visible
    x = torch.randn(a.batch, net['channels'], net['input'], net['input'], generator=g) * 50
    taps = {}
    with torch.no_grad():
        model(x, taps)
    np.save(os.path.join(a.outdir, 'input.npy'), x.numpy().astype(np.float32))
    for name, v in taps.items():
        np.save(os.path.join(a.outdir, name.replace('/', '.') + '.npy'), v.numpy().astype(np.float32))
    export(model, net, os.path.join(a.outdir, 'model.onnx'), not a.no_aux)
    if a.bvlc:  # like the public file: no auxiliary heads
        model.with_aux = False
        bvlc = os.path.join(a.outdir, 'model-bvlc.onnx')
        export(model, net, bvlc, False)
        to_bvlc(bvlc, bvlc, net, spec)
    print('wrote %s: %d layers, batch %d, seed %d' % (a.outdir, len(taps), a.batch, a.seed), file=sys.stderr)


def cmd_export(a):
    net, spec, model = build(a.config, a.seed, not a.no_aux)
    export(model, net, a.out, not a.no_aux)
    if a.bvlc:
        to_bvlc(a.out, a.out, net, spec)


def cmd_other(a):
    """A small network of another topology (a residual block, global average pooling) whose classifier has the
    shape of GoogLeNet-tiny's, for the importer's refusal test."""
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 64, 3, 2, 1)
            self.c2 = nn.Conv2d(64, 64, 1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = F.relu(self.c1(x))
            x = F.relu(x + self.c2(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
    torch.manual_seed(a.seed)
    m = Other().eval()
    torch.onnx.export(m, torch.zeros(1, 3, 96, 96), a.out, opset_version=11, input_names=['data'],
                      output_names=['logits'])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    f = sub.add_parser('fixtures')
    f.add_argument('config')
    f.add_argument('outdir')
    f.add_argument('--seed', type=int, default=2014)
    f.add_argument('--batch', type=int, default=1)
    f.add_argument('--no-aux', action='store_true')
    f.add_argument('--bvlc', action='store_true')
    e = sub.add_parser('export')
    e.add_argument('config')
    e.add_argument('out')
    e.add_argument('--seed', type=int, default=2014)
    e.add_argument('--no-aux', action='store_true')
    e.add_argument('--bvlc', action='store_true')
    o = sub.add_parser('other-topology')
    o.add_argument('out')
    o.add_argument('--seed', type=int, default=2014)
    a = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    {'fixtures': cmd_fixtures, 'export': cmd_export, 'other-topology': cmd_other}[a.cmd](a)


if __name__ == '__main__':
    main()
