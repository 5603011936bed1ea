#!/usr/bin/python3
"""Caffe fixtures for `inception import X.caffemodel`: the network of a config (tools/reference.py's PyTorch
GoogLeNet, seeded) written as bvlc_googlenet.caffemodel is laid out, with python3-protobuf and the same proto
subset the importer compiles (src/classifier/proto/caffe.proto, compiled here by protoc), and the outputs PyTorch
computes.

Usage (Debian's interpreter: /usr/bin/python3 has torch and protobuf; protoc from protobuf-compiler):
  tools/caffe_fixture.py OUTDIR [--config configs/googlenet-tiny.cfg] [--input tests/data/googlenet-tiny/input.npy]
      [--seed 10]

Writes OUTDIR/model.caffemodel (current `layer` form, blobs with BlobShape, the auxiliary heads included),
OUTDIR/model-v1.caffemodel (the V1 `layers` form of 2014, blobs as num/channels/height/width, no auxiliary
heads), deploy.prototxt (text format, as bvlc_googlenet's deploy file: an Input layer, no blobs, no auxiliary
heads), deploy-v1.prototxt (the same in the V1 form, the input as input_dim) and bad-deploy.prototxt (its conv1
5x5), and logits.npy, loss1.npy, loss2.npy: PyTorch's outputs on INPUT. Also three small files the importer
must refuse: bad-size.caffemodel (conv1's blob holds fewer values than its shape), bad-shape.caffemodel (conv1's
weights of another kernel size), bad-type.caffemodel (an Eltwise layer: a residual network). Layer names, types and order are
bvlc_googlenet's (conv1/7x7_s2, conv1/relu_7x7, pool1/3x3_s2, pool1/norm1, conv2/3x3_reduce, ...,
inception_3a/1x1, ..., inception_3a/output, loss1/ave_pool, loss1/conv, loss1/fc, loss1/classifier, loss1/loss,
..., pool5/7x7_s1, pool5/drop_7x7_s1, loss3/classifier, prob).
"""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402


def caffe_pb2():
    out = tempfile.mkdtemp()
    proto = os.path.join(HERE, '..', 'src', 'classifier', 'proto')
    subprocess.run(['protoc', '--proto_path=' + proto, '--python_out=' + out, os.path.join(proto, 'caffe.proto')],
                   check=True)
    sys.path.insert(0, out)
    return importlib.import_module('caffe_pb2')


class Writer:
    """Appends layers to a NetParameter in the current or the V1 form."""

    V1 = {'Convolution': 'CONVOLUTION', 'ReLU': 'RELU', 'Pooling': 'POOLING', 'LRN': 'LRN', 'Concat': 'CONCAT',
          'InnerProduct': 'INNER_PRODUCT', 'Dropout': 'DROPOUT', 'Softmax': 'SOFTMAX',
          'SoftmaxWithLoss': 'SOFTMAX_LOSS'}

    def __init__(self, pb, v1):
        self.pb, self.v1 = pb, v1
        self.net = pb.NetParameter(name='GoogleNet')

    def layer(self, name, type_, bottom, top, blobs=(), **params):
        if self.v1:
            L = self.net.layers.add()
            L.type = getattr(self.pb.V1LayerParameter, self.V1[type_])
        else:
            L = self.net.layer.add()
            L.type = type_
        L.name = name
        L.bottom.extend(bottom if isinstance(bottom, list) else [bottom])
        L.top.append(top)
        for key, fields in params.items():
            p = getattr(L, key)
            for k, v in fields.items():
                if isinstance(v, list):
                    getattr(p, k).extend(v)
                else:
                    setattr(p, k, v)
        for arr in blobs:
            b = L.blobs.add()
            a = arr.detach().numpy().astype(np.float32)
            if self.v1:  # num, channels, height, width: leading 1s
                d = [1] * (4 - a.ndim) + list(a.shape)
                b.num, b.channels, b.height, b.width = d
            else:
                b.shape.dim.extend(a.shape)
            b.data.extend(a.ravel().tolist())
        return top


def conv(w, name, x, mod, k, stride=1, pad=0, relu_name=None):
    c = mod.conv
    top = w.layer(name, 'Convolution', x, name, [c.weight, c.bias],
                  convolution_param={'num_output': c.out_channels, 'kernel_size': [k], 'stride': [stride], 'pad': [pad]})
    return w.layer(relu_name or name.replace('/', '/relu_', 1), 'ReLU', top, top)


def write(pb, v1, net, spec, model, path, with_aux):
    w = Writer(pb, v1)
    x = 'data'
    for d in spec:
        key, kind, n = d['name'].replace('.', '_'), d['kind'], d['name']
        if kind == 'conv':
            if 'reduce' in d:
                x = conv(w, '%s/%dx%d_reduce' % (n, d['k'], d['k']), x, model.mods[key + '_reduce'], 1,
                         relu_name='%s/relu_%dx%d_reduce' % (n, d['k'], d['k']))
            suffix = '%dx%d' % (d['k'], d['k']) + ('_s%d' % d['stride'] if d['stride'] > 1 else '')
            x = conv(w, '%s/%s' % (n, suffix), x, model.mods[key], d['k'], d['stride'], d.get('pad', 0),
                     relu_name='%s/relu_%s' % (n, suffix.split('_')[0]))
        elif kind in ('maxpool', 'avgpool'):
            pname = {'pool1': 'pool1/3x3_s2', 'pool2': 'pool2/3x3_s2', 'pool3': 'pool3/3x3_s2',
                     'pool4': 'pool4/3x3_s2'}.get(n, '%s/%dx%d_s%d' % (n, d['k'], d['k'], d['stride']))
            x = w.layer(pname, 'Pooling', x, pname, pooling_param={
                'pool': 0 if kind == 'maxpool' else 1, 'kernel_size': d['k'], 'stride': d['stride'],
                'pad': d.get('pad', 0)})
        elif kind == 'lrn':
            lname = {'norm1': 'pool1/norm1', 'norm2': 'conv2/norm2'}.get(n, n)
            x = w.layer(lname, 'LRN', x, lname, lrn_param={'local_size': d.get('size', 5), 'alpha': d.get('alpha', 1e-4),
                                                          'beta': d.get('beta', 0.75), 'k': d.get('k', 1.0)})
        elif kind == 'inception':
            m = model.mods[key]
            b1 = conv(w, n + '/1x1', x, m.b1, 1)
            b3 = conv(w, n + '/3x3', conv(w, n + '/3x3_reduce', x, m.b3r, 1), m.b3, 3, 1, 1)
            b5 = conv(w, n + '/5x5', conv(w, n + '/5x5_reduce', x, m.b5r, 1), m.b5, 5, 1, 2)
            pool = w.layer(n + '/pool', 'Pooling', x, n + '/pool',
                           pooling_param={'pool': 0, 'kernel_size': 3, 'stride': 1, 'pad': 1})
            pp = conv(w, n + '/pool_proj', pool, m.proj, 1)
            x = w.layer(n + '/output', 'Concat', [b1, b3, b5, pp], n + '/output')
        elif kind == 'aux' and with_aux:
            a = model.mods[key]
            t = w.layer(n + '/ave_pool', 'Pooling', x, n + '/ave_pool',
                        pooling_param={'pool': 1, 'kernel_size': a.k, 'stride': a.stride})
            t = conv(w, n + '/conv', t, a.conv, 1, relu_name=n + '/relu_conv')
            t = w.layer(n + '/fc', 'InnerProduct', t, n + '/fc', [a.fc.weight, a.fc.bias],
                        inner_product_param={'num_output': a.fc.out_features})
            t = w.layer(n + '/relu_fc', 'ReLU', t, t)
            t = w.layer(n + '/drop_fc', 'Dropout', t, t, dropout_param={'dropout_ratio': 0.7})
            t = w.layer(n + '/classifier', 'InnerProduct', t, n + '/classifier', [a.classifier.weight, a.classifier.bias],
                        inner_product_param={'num_output': a.classifier.out_features})
            w.layer(n + '/loss', 'SoftmaxWithLoss', [t, 'label'], n + '/loss1')
        elif kind == 'dropout':
            x = w.layer('pool5/drop_7x7_s1', 'Dropout', x, x, dropout_param={'dropout_ratio': d['p']})
        elif kind == 'fc':
            fc = model.mods[key]
            x = w.layer('loss3/classifier', 'InnerProduct', x, 'loss3/classifier', [fc.weight, fc.bias],
                        inner_product_param={'num_output': fc.out_features})
        elif kind == 'softmax':
            x = w.layer('prob', 'Softmax', x, 'prob')
    with open(path, 'wb') as f:
        f.write(w.net.SerializeToString())


def write_deploy(pb, outdir, net, spec, model):
    """deploy.prototxt as bvlc_googlenet's: an Input layer, no blobs, no auxiliary heads nor losses; in text format
    (with a comment and `shape: {`, as people write it). bad-deploy.prototxt: conv1 with a 5x5 kernel."""
    from google.protobuf import text_format
    path = os.path.join(outdir, 'deploy.prototxt')
    write(pb, False, net, spec, model, path, False)
    n = pb.NetParameter()
    with open(path, 'rb') as f:
        n.ParseFromString(f.read())
    deploy = pb.NetParameter(name=n.name)
    inp = deploy.layer.add(name='data', type='Input')
    inp.top.append('data')
    inp.input_param.shape.add().dim.extend([10, net['channels'], net['input'], net['input']])
    for L in n.layer:
        L.ClearField('blobs')
        deploy.layer.add().CopyFrom(L)
    text = '# GoogLeNet-tiny, deployed as bvlc_googlenet\n' + text_format.MessageToString(deploy).replace('shape {', 'shape: {')
    with open(path, 'w') as f:
        f.write(text)
    bad = text.replace('kernel_size: 7', 'kernel_size: 5', 1)
    with open(os.path.join(outdir, 'bad-deploy.prototxt'), 'w') as f:
        f.write(bad)
    # the V1 form of 2014: `layers` with enum types, the input as input / input_dim
    path = os.path.join(outdir, 'deploy-v1.prototxt')
    write(pb, True, net, spec, model, path, False)
    n = pb.NetParameter()
    with open(path, 'rb') as f:
        n.ParseFromString(f.read())
    for L in n.layers:
        L.ClearField('blobs')
    n.input.append('data')
    n.input_dim.extend([10, net['channels'], net['input'], net['input']])
    with open(path, 'w') as f:
        f.write(text_format.MessageToString(n))


def write_bad(pb, outdir, model):
    """Files that are not this network, each a few layers long."""
    w = model.mods['conv1'].conv.weight.detach().numpy()

    def net_with(layers, path):
        n = pb.NetParameter(name='bad')
        for name, type_, shape, values in layers:
            L = n.layer.add(name=name, type=type_)
            if shape is not None:
                b = L.blobs.add()
                b.shape.dim.extend(shape)
                b.data.extend(values)
        with open(os.path.join(outdir, path), 'wb') as f:
            f.write(n.SerializeToString())
    net_with([('conv1/7x7_s2', 'Convolution', list(w.shape), w.ravel()[:-5].tolist())], 'bad-size.caffemodel')
    net_with([('conv1/7x7_s2', 'Convolution', [w.shape[0], 3, 5, 5], [0.0] * (w.shape[0] * 75))], 'bad-shape.caffemodel')
    net_with([('conv1/7x7_s2', 'Convolution', list(w.shape), w.ravel().tolist()), ('res1', 'Eltwise', None, None)],
             'bad-type.caffemodel')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('outdir')
    p.add_argument('--config', default='configs/googlenet-tiny.cfg')
    p.add_argument('--input', default='tests/data/googlenet-tiny/input.npy')
    p.add_argument('--seed', type=int, default=10)
    a = p.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    pb = caffe_pb2()
    net, spec, model = R.build(a.config, a.seed, True)
    x = torch.from_numpy(np.load(a.input))
    with torch.no_grad():
        logits, *aux = model(x)
    np.save(os.path.join(a.outdir, 'logits.npy'), logits.numpy().astype(np.float32))
    for i, t in enumerate(aux):
        np.save(os.path.join(a.outdir, 'loss%d.npy' % (i + 1)), t.numpy().astype(np.float32))
    write(pb, False, net, spec, model, os.path.join(a.outdir, 'model.caffemodel'), True)
    write(pb, True, net, spec, model, os.path.join(a.outdir, 'model-v1.caffemodel'), False)
    write_deploy(pb, a.outdir, net, spec, model)
    write_bad(pb, a.outdir, model)
    print('wrote %s (seed %d)' % (a.outdir, a.seed), file=sys.stderr)


if __name__ == '__main__':
    main()
