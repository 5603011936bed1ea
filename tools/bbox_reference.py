#!/usr/bin/python3
"""The reference for the C ridge solver of the box regressor (src/train/bbox_fit.c, bbox_ridge_fit), by another
route: NumPy's least squares (an SVD) on the stacked system rather than the normal equations and a Cholesky.

Usage (Debian's interpreter: /usr/bin/python3 has numpy):
  tools/bbox_reference.py OUTDIR [--seed S] [--n N] [--d D] [--lam L]
      draws features x (N, D) shaped like a network's pooled ReLU outputs (many zeros, columns of very different
      scales, one column that is always 0 and one that is always 2.5: dead and constant units) and targets
      t (N, 4) = a linear function of x + noise, all float32 as the C side reads them. In float64 from those
      float32 values, each column is standardised (population standard deviation; a column whose spread is at most
      1e-6 of its mean's magnitude is constant: its weight is 0), then for each target
          minimise  sum_i (t_i - w . z_i - b)^2 + L * N * |w|^2          (the bias b not penalised)
      solved as the least-squares problem [Z 1; sqrt(L N) I 0] [w; b] ~ [t; 0] (numpy.linalg.lstsq), and w, b
      mapped back to x's units (w / sd, b - sum w mu / sd). Writes, in OUTDIR (float32 .npy):
        x.npy       (N, D)
        t.npy       (N, 4)
        lambda.npy  (1)
        w.npy       (4, D)  the weights in x's units, one row per target
        b.npy       (4)
"""
import argparse
import os

import numpy as np


def features(rng, n, d):
    x = np.maximum(rng.normal(0.2, 1.0, (n, d)), 0) * rng.uniform(0.1, 30.0, d)  # ReLU outputs, varied scales
    x[:, 3] = 0.0   # a dead unit
    x[:, 7] = 2.5   # a unit that does not vary
    return x.astype(np.float32)


def ridge(x, t, lam):
    x, t = x.astype(np.float64), t.astype(np.float64)
    n, d = x.shape
    mu, sd = x.mean(axis=0), x.std(axis=0)
    live = sd > 1e-6 * np.abs(mu)
    z = (x[:, live] - mu[live]) / sd[live]
    m = z.shape[1]
    a = np.concatenate([np.concatenate([z, np.ones((n, 1))], axis=1),
                        np.concatenate([np.sqrt(lam * n) * np.eye(m), np.zeros((m, 1))], axis=1)])
    rhs = np.concatenate([t, np.zeros((m, t.shape[1]))])
    sol = np.linalg.lstsq(a, rhs, rcond=None)[0]  # (m + 1, K)
    w = np.zeros((t.shape[1], d))
    w[:, live] = (sol[:m] / sd[live][:, None]).T
    b = sol[m] - w @ mu
    return w, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--lam", type=float, default=0.3)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    x = features(rng, args.n, args.d)
    true_w = rng.normal(0, 0.05, (4, args.d))
    t = (x.astype(np.float64) @ true_w.T + rng.normal(0, 0.1, 4) + rng.normal(0, 0.2, (args.n, 4))).astype(np.float32)
    lam = float(np.float32(args.lam))  # the value the C side reads back
    w, b = ridge(x, t, lam)
    os.makedirs(args.outdir, exist_ok=True)
    arrays = {"x": x, "t": t, "lambda": np.array([lam]), "w": w, "b": b}
    for name, a in arrays.items():
        np.save(os.path.join(args.outdir, name + ".npy"), np.ascontiguousarray(a, dtype=np.float32))
    print(f"wrote {args.outdir}: n={args.n} d={args.d} lambda={args.lam}")


if __name__ == "__main__":
    main()
