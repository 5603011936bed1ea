#!/usr/bin/python3
"""The batch-normalisation reference for the C network: PyTorch's conv (no bias) -> BatchNorm2d -> ReLU on a small
batch, in training mode and then in eval mode, for tests/test_batchnorm.c.

Usage (Debian's interpreter: /usr/bin/python3 has torch and numpy):
  tools/batchnorm_reference.py [OUTDIR]      (default tests/data/batchnorm)

Draws, with a fixed seed, an input x (4, 3, 5, 4), a 3x3 convolution (4 outputs, pad 1, no bias), BN's gamma and
beta and a starting running mean and variance (not PyTorch's defaults, so that the update is visible), and an
upstream gradient dy. Everything is computed in float64 from those float32 values, and written as float32 .npy:
  x, weight, gamma, beta, running_mean0, running_var0, dy     the inputs
  y_train                  the training-mode output (batch statistics)
  dx, dweight, dgamma, dbeta   gradients of sum(dy * y_train)
  running_mean, running_var    the running statistics after that one training pass (momentum 0.1, eps 1e-5,
                           the variance's update unbiased)
  y_eval                   the eval-mode output with those running statistics
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

N, CIN, COUT, H, W = 4, 3, 4, 5, 4


def draw(rng):
    """The float32 inputs, then as float64 tensors."""
    v = {
        "x": rng.standard_normal((N, CIN, H, W)),
        "weight": 0.4 * rng.standard_normal((COUT, CIN, 3, 3)),
        "gamma": 1.0 + 0.5 * rng.standard_normal(COUT),
        "beta": 0.3 * rng.standard_normal(COUT),
        "running_mean0": 0.2 * rng.standard_normal(COUT),
        "running_var0": 0.5 + rng.random(COUT),
        "dy": rng.standard_normal((N, COUT, H, W)),
    }
    v = {k: a.astype(np.float32) for k, a in v.items()}
    return v, {k: torch.from_numpy(a.astype(np.float64)) for k, a in v.items()}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                             "batchnorm")
    os.makedirs(out, exist_ok=True)
    arrays, t = draw(np.random.default_rng(20240611))
    x = t["x"].clone().requires_grad_(True)
    conv = torch.nn.Conv2d(CIN, COUT, 3, padding=1, bias=False).double()
    bn = torch.nn.BatchNorm2d(COUT, eps=1e-5, momentum=0.1).double()
    with torch.no_grad():
        conv.weight.copy_(t["weight"])
        bn.weight.copy_(t["gamma"])
        bn.bias.copy_(t["beta"])
        bn.running_mean.copy_(t["running_mean0"])
        bn.running_var.copy_(t["running_var0"])
    bn.train()
    y = F.relu(bn(conv(x)))
    (y * t["dy"]).sum().backward()
    arrays.update(y_train=y, dx=x.grad, dweight=conv.weight.grad, dgamma=bn.weight.grad, dbeta=bn.bias.grad,
                  running_mean=bn.running_mean, running_var=bn.running_var)
    bn.eval()
    with torch.no_grad():
        arrays["y_eval"] = F.relu(bn(conv(t["x"])))
    for name, a in arrays.items():
        if isinstance(a, torch.Tensor):
            a = a.detach().numpy()
        np.save(os.path.join(out, name + ".npy"), np.ascontiguousarray(a, dtype=np.float32))
    active = float((arrays["y_train"] > 0).float().mean())
    print(f"wrote {len(arrays)} arrays to {out}; ReLU active on {active:.0%} of the outputs")


if __name__ == "__main__":
    main()
