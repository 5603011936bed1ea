#!/usr/bin/python3
"""PyTorch (Debian python3-torch) training throughput, for bench/train.sh: the same GoogLeNet (tools/reference.py,
from the same config, auxiliary heads included) in train mode, eager, on THREADS threads; one step is the forward
pass, the loss main + 0.3 x (loss1 + loss2) (cross-entropy, batch mean), backward, and torch.optim.SGD(momentum
0.9, weight_decay 2e-4). Prints one JSON line like bench_train.

Usage: train_py.py CONFIG SEED INPUT.f32 LABELS.i32 BATCH REPS THREADS
"""
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
import reference  # noqa: E402


def main():
    config, seed, inp, lab, batch, reps, threads = sys.argv[1:]
    batch, reps = int(batch), int(reps)
    torch.set_num_threads(int(threads))
    net, _, model = reference.build(config, int(seed), with_aux=True)
    model.train()
    side = net['input']
    x = torch.from_numpy(np.fromfile(inp, dtype=np.float32).reshape(batch, net['channels'], side, side))
    y = torch.from_numpy(np.fromfile(lab, dtype=np.int32).astype(np.int64))
    opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9, weight_decay=2e-4)
    phase = [0.0, 0.0, 0.0]

    def step(timed):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits, aux1, aux2 = model(x)
        loss = F.cross_entropy(logits, y) + 0.3 * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if timed:
            phase[0] += t1 - t0
            phase[1] += t2 - t1
            phase[2] += t3 - t2
        return loss.item(), t3 - t0

    step(False)  # warm-up
    times, loss = [], 0.0
    c0 = time.process_time()
    for _ in range(reps):
        loss, t = step(True)
        times.append(t)
    cpu = time.process_time() - c0
    times.sort()
    med, best = times[reps // 2], times[0]
    print(json.dumps({
        'engine': 'PyTorch %s (eager, train mode)' % torch.__version__, 'threads': torch.get_num_threads(),
        'batch': batch, 'reps': reps,
        'ms_per_image': round(1e3 * med / batch, 2), 'images_per_s': round(batch / med, 2),
        'best_images_per_s': round(batch / best, 2), 'cpu_ms_per_image': round(1e3 * cpu / (reps * batch), 2),
        'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        'forward_ms': round(1e3 * phase[0] / reps, 1), 'backward_ms': round(1e3 * phase[1] / reps, 1),
        'update_ms': round(1e3 * phase[2] / reps, 1), 'loss': round(loss, 4)}))


if __name__ == '__main__':
    main()
