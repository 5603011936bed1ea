#!/usr/bin/python3
"""The training reference for the C network: PyTorch's loss, gradients and SGD steps for the same GoogLeNet on a
fixed batch (tools/reference.py builds the network from the same config file).

Usage (Debian's interpreter: /usr/bin/python3 has torch and numpy):
  tools/train_reference.py fixture CONFIG OUTDIR [--seed S] [--batch N] [--scale X] [--lr LR] [--momentum M]
                           [--weight-decay WD] [--aux-weight A] [--steps N]
      builds the network with a fixed seed (He-normal weights, biases uniform in [0, 0.1]; the three
      classifiers' weights then scaled by 0.1 so that the initial loss is moderate), draws a batch of N(0, X^2)
      inputs and uniform labels, and runs `steps` steps of torch.optim.SGD(momentum, weight_decay) on that one
      batch, the loss being the main classifier's cross-entropy plus aux-weight times each auxiliary head's
      (Section 5 of the paper), each averaged over the batch. Writes, in OUTDIR:
        init.safetensors     the weights before the first step, named as the C network names its parameters
        grads.safetensors    the gradient of the first step's loss with respect to every parameter
        step1.safetensors    the weights after one step
        stepN.safetensors    the weights after the last step (N = steps)
        input.npy            the batch, (N, C, H, W) float32
        labels.npy           the labels as float32 (the C side reads float32 .npy only)
        losses.npy           (steps, 4): total, main, loss1, loss2 before each step
      The config's dropout must be p = 0 (and the auxiliary heads' dropout=0): the masks of the two sides
      cannot be the same draws.
  train_py.py is the benchmark counterpart (bench/).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402


def named_parameters(model, spec):
    """(name, parameter) in the C network's names: "conv2/reduce.weight", "inception_3a/5x5_reduce.bias",
    "loss1/fc.weight", "classifier.bias", ..."""
    out = []

    def add(name, module):
        out.append((name + '.weight', module.weight))
        out.append((name + '.bias', module.bias))
    branches = (('b1', '1x1'), ('b3r', '3x3_reduce'), ('b3', '3x3'), ('b5r', '5x5_reduce'), ('b5', '5x5'),
                ('proj', 'pool_proj'))
    for d in spec:
        key, name, kind = d['name'].replace('.', '_'), d['name'], d['kind']
        if kind == 'conv':
            if 'reduce' in d:
                add(name + '/reduce', model.mods[key + '_reduce'].conv)
            add(name, model.mods[key].conv)
        elif kind == 'inception':
            for attr, part in branches:
                add(name + '/' + part, getattr(model.mods[key], attr).conv)
        elif kind == 'aux' and model.with_aux:
            head = model.mods[key]
            add(name + '/conv', head.conv.conv)
            add(name + '/fc', head.fc)
            add(name + '/classifier', head.classifier)
        elif kind == 'fc':
            add(name, model.mods[key])
    assert len(out) == len(list(model.parameters())), 'every parameter named'
    return out


def save_safetensors(path, tensors):
    """tensors: [(name, float32 array)] -> safetensors with the metadata the C loader recognises."""
    header, offset, blobs = {}, 0, []
    for name, a in tensors:
        b = np.ascontiguousarray(a, dtype='<f4').tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header['__metadata__'] = {'format': 'inception', 'version': '1'}
    text = json.dumps(header, separators=(',', ':')).encode()
    text += b' ' * (-len(text) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def snapshot(params, what):
    return [(n, (p.grad if what == 'grad' else p).detach().numpy().copy()) for n, p in params]


def cmd_fixture(a):
    net, spec, model = reference.build(a.config, a.seed, with_aux=True)
    for d in spec:
        if (d['kind'] == 'dropout' and d['p'] != 0) or (d['kind'] == 'aux' and d.get('dropout', 0.7) != 0):
            sys.exit('%s: %s: dropout must be 0 for a fixture' % (a.config, d['name']))
    params = named_parameters(model, spec)
    with torch.no_grad():
        for name, p in params:
            if name.endswith('classifier.weight'):
                p.mul_(0.1)
    model.train()
    g = torch.Generator().manual_seed(a.seed + 1)
    x = torch.randn(a.batch, net['channels'], net['input'], net['input'], generator=g) * a.scale
    labels = torch.randint(0, net['classes'], (a.batch,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    os.makedirs(a.outdir, exist_ok=True)
    save_safetensors(os.path.join(a.outdir, 'init.safetensors'), snapshot(params, 'weight'))
    losses = []
    for step in range(a.steps):
        opt.zero_grad()
        logits, aux1, aux2 = model(x)
        heads = [F.cross_entropy(logits, labels), F.cross_entropy(aux1, labels), F.cross_entropy(aux2, labels)]
        total = heads[0] + a.aux_weight * (heads[1] + heads[2])
        losses.append([total.item()] + [h.item() for h in heads])
        total.backward()
        if step == 0:
            save_safetensors(os.path.join(a.outdir, 'grads.safetensors'), snapshot(params, 'grad'))
        opt.step()
        if step == 0:
            save_safetensors(os.path.join(a.outdir, 'step1.safetensors'), snapshot(params, 'weight'))
    save_safetensors(os.path.join(a.outdir, 'step%d.safetensors' % a.steps), snapshot(params, 'weight'))
    np.save(os.path.join(a.outdir, 'input.npy'), x.numpy().astype(np.float32))
    np.save(os.path.join(a.outdir, 'labels.npy'), labels.numpy().astype(np.float32))
    np.save(os.path.join(a.outdir, 'losses.npy'), np.array(losses, dtype=np.float32))
    print('wrote %s: batch %d, %d steps, loss %.4f -> %.4f' % (a.outdir, a.batch, a.steps, losses[0][0],
                                                               losses[-1][0]), file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    f = sub.add_parser('fixture')
    f.add_argument('config')
    f.add_argument('outdir')
    f.add_argument('--seed', type=int, default=2014)
    f.add_argument('--batch', type=int, default=4)
    f.add_argument('--scale', type=float, default=30.0)
    f.add_argument('--lr', type=float, default=0.01)
    f.add_argument('--momentum', type=float, default=0.9)
    f.add_argument('--weight-decay', type=float, default=2e-4)
    f.add_argument('--aux-weight', type=float, default=0.3)
    f.add_argument('--steps', type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    {'fixture': cmd_fixture}[a.cmd](a)


if __name__ == '__main__':
    main()
