#!/usr/bin/python3
"""The reference for the C MultiBox loss (src/classifier/multibox.c): the matching by SciPy's optimal assignment,
the loss and its gradient by PyTorch's autograd, on a small random batch.

Usage (Debian's interpreter: /usr/bin/python3 has torch, numpy and scipy):
  tools/multibox_reference.py OUTDIR [--seed S] [--k K] [--alpha A]
      draws K priors and, for each of the images, ground-truth boxes (0, 1, a few, exactly K and more than K of
      them, so that every case of the matching is covered) and a head output of 5K values: K offsets (x1, y1, x2,
      y2) N(0, 0.1^2), then K logits N(0, 3^2) with a few at +-40 (the stable form of the sigmoid cross-entropy
      is needed there). All in float32, as the C side reads them. Each image's boxes are matched to distinct
      priors minimising the total squared L2 distance between corner vectors (scipy.optimize.linear_sum_assignment,
      which takes the K best boxes when there are more than K), and the loss is computed in float64:
        per image  alpha/2 * sum over matched (g, k) of ||prior_k + offset_k - gt_g||^2
                   + sum over k of binary_cross_entropy_with_logits(logit_k, [k matched])
        batch      the mean over the images
      Writes, in OUTDIR (every array float32 .npy, the C side reads no other dtype):
        out.npy      (N, 5K) the head's outputs
        priors.npy   (K, 4)
        boxes.npy    (B, 4) every image's ground-truth boxes, one image after the other
        counts.npy   (N) boxes of each image
        matches.npy  (N, K) the box matched to each prior (an index into the image's boxes), -1 for none
        loss.npy     (3) the loss, its location part and its confidence part
        grad.npy     (N, 5K) d loss / d out by autograd
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def random_boxes(rng, n):
    """n boxes (x1, y1, x2, y2) in [0, 1] with ordered corners."""
    a, b = rng.random((n, 2)), rng.random((n, 2))
    return np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=1).astype(np.float32)


def match(gt, priors):
    """For each prior the index of its box, or -1: the optimal assignment of the smaller side to the larger."""
    m = np.full(len(priors), -1, dtype=np.int64)
    if len(gt) == 0:
        return m
    cost = ((gt.astype(np.float64)[:, None, :] - priors.astype(np.float64)[None, :, :]) ** 2).sum(axis=2)  # (G, K)
    rows, cols = linear_sum_assignment(cost)
    m[cols] = rows
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('outdir')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--k', type=int, default=12)
    ap.add_argument('--alpha', type=float, default=0.3)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    K = args.k
    counts = [0, 1, 4, K, K + 5]
    n = len(counts)
    priors = random_boxes(rng, K)
    boxes = [random_boxes(rng, c) for c in counts]
    out = np.empty((n, 5 * K), dtype=np.float32)
    out[:, :4 * K] = rng.normal(0, 0.1, (n, 4 * K))
    out[:, 4 * K:] = rng.normal(0, 3.0, (n, K))
    out[1, 4 * K + 0], out[2, 4 * K + 1], out[3, 4 * K + 2] = 40.0, -40.0, 38.5

    matches = np.stack([match(b, priors) for b in boxes])  # (n, K)
    x = torch.tensor(out, dtype=torch.float64, requires_grad=True)
    pri = torch.tensor(priors, dtype=torch.float64)
    loc = torch.zeros((), dtype=torch.float64)
    conf = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        off, logit = x[i, :4 * K].reshape(K, 4), x[i, 4 * K:]
        m = torch.tensor(matches[i])
        hit = m >= 0
        gt = torch.tensor(boxes[i], dtype=torch.float64)
        if hit.any():
            loc = loc + args.alpha / 2 * ((pri[hit] + off[hit] - gt[m[hit]]) ** 2).sum()
        conf = conf + F.binary_cross_entropy_with_logits(logit, hit.to(torch.float64), reduction='sum')
    loss = (loc + conf) / n
    loss.backward()

    os.makedirs(args.outdir, exist_ok=True)

    def save(name, a):
        np.save(os.path.join(args.outdir, name), np.ascontiguousarray(a, dtype=np.float32))
    save('out.npy', out)
    save('priors.npy', priors)
    save('boxes.npy', np.concatenate(boxes, axis=0))
    save('counts.npy', np.array(counts))
    save('matches.npy', matches)
    save('loss.npy', np.array([loss.item(), loc.item() / n, conf.item() / n]))
    save('grad.npy', x.grad.numpy())
    print(f'{args.outdir}: {n} images, K = {K}, boxes {counts}, loss {loss.item():.6f} '
          f'(location {loc.item() / n:.6f}, confidence {conf.item() / n:.6f})')


if __name__ == '__main__':
    main()
