#!/usr/bin/python3
"""PyTorch (Debian python3-torch) and OpenCV DNN (python3-opencv) forward throughput, for bench/forward.sh.

Usage: forward_py.py torch CONFIG SEED INPUT.f32 BATCH REPS THREADS OUT.f32
       forward_py.py opencv MODEL.onnx INPUT.f32 BATCH REPS THREADS OUT.f32
PyTorch runs the network that was exported to the ONNX file (tools/reference.py, same config and seed) in eager
mode under inference_mode; OpenCV reads the ONNX file itself.
"""
import json
import os
import resource
import sys
import time

import numpy as np


def timed(run, reps, batch):
    y = run()  # warm-up
    times = []
    c0 = time.process_time()
    for _ in range(reps):
        t0 = time.perf_counter()
        y = run()
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - c0
    times.sort()
    med, best = times[reps // 2], times[0]
    return y, {'batch': batch, 'reps': reps, 'ms_per_image': round(1e3 * med / batch, 2),
               'images_per_s': round(batch / med, 2), 'best_images_per_s': round(batch / best, 2),
               'cpu_ms_per_image': round(1e3 * cpu / (reps * batch), 2),
               'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main():
    kind = sys.argv[1]
    if kind == 'torch':
        config, seed, inp, batch, reps, threads, out = sys.argv[2:]
        import torch
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
        import reference
        torch.set_num_threads(int(threads))
        net, _, model = reference.build(config, int(seed), with_aux=False)
        batch = int(batch)
        x = torch.from_numpy(np.fromfile(inp, dtype=np.float32).reshape(batch, 3, net['input'], net['input']))

        def run():
            with torch.inference_mode():
                return model(x)[0].numpy()
        y, r = timed(run, int(reps), batch)
        r['engine'] = 'PyTorch %s (eager, inference_mode)' % torch.__version__
    else:
        model_path, inp, batch, reps, threads, out = sys.argv[2:]
        import cv2
        cv2.setNumThreads(int(threads))
        net = cv2.dnn.readNetFromONNX(model_path)
        batch = int(batch)
        data = np.fromfile(inp, dtype=np.float32)
        side = int(round((data.size / (3 * batch)) ** 0.5))
        x = data.reshape(batch, 3, side, side)

        def run():
            net.setInput(x)
            return net.forward()
        y, r = timed(run, int(reps), batch)
        r['engine'] = 'OpenCV %s DNN' % cv2.__version__
    np.ascontiguousarray(y, dtype=np.float32).tofile(out)
    print(json.dumps(r))


if __name__ == '__main__':
    main()
