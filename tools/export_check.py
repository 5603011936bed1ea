#!/usr/bin/python3
"""Runs a model written by `inception export` in another runtime and compares its outputs with ours.

Usage (Debian's interpreter: /usr/bin/python3 has numpy, onnx and OpenCV):
  tools/export_check.py RUNTIME MODEL.onnx INPUT.npy NAME=OURS.npy [NAME=OURS.npy ...] [--classes JSON]
RUNTIME: opencv (cv2.dnn.readNetFromONNX, Debian python3-opencv) or ort (ONNX Runtime through npm
onnxruntime-node: tools/export_check_ort.js, installed in bench/ as bench/forward.sh does when missing).
Each output NAME of the model, run on INPUT (N, C, H, W), must match OURS within 1e-4 of the spread (max - min)
of OURS; NAME@log compares the logarithms (of probabilities near 0 and 1, whose logarithms keep the logits'
differences that the probabilities round away; values below 1e-30, which float32 rounds to 0 where logits lie far
apart, count as 1e-30). --classes: the JSON array of names the model's metadata "classes" must hold (read with the onnx package).
Prints the largest difference of each output. Exit status: 0 match, 1 mismatch or failure, 77 the runtime is
not available here (the message says why).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4


def run_opencv(model, x, names):
    try:
        import cv2
    except ImportError as e:
        print('SKIP: OpenCV for Python is not installed (%s)' % e)
        sys.exit(77)
    net = cv2.dnn.readNetFromONNX(model)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setInput(x)
    outs = net.forward(names)
    return 'OpenCV DNN ' + cv2.__version__, dict(zip(names, outs))


def ort_available():
    """Whether onnxruntime-node can be loaded, installing it in bench/ (as bench/forward.sh does) when missing."""
    if not shutil.which('node'):
        return 'node is not installed'
    if not os.path.isdir(os.path.join(ROOT, 'bench', 'node_modules', 'onnxruntime-node')):
        if not shutil.which('npm'):
            return 'onnxruntime-node is not installed in bench/ and npm is not available to install it'
        env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL='skip')
        r = subprocess.run(['npm', 'install', '--no-audit', '--no-fund'], cwd=os.path.join(ROOT, 'bench'), env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            return 'npm install of onnxruntime-node failed: ' + (r.stderr.strip().splitlines() or ['?'])[-1]
    return None


def run_ort(model, x, names):
    why = ort_available()
    if why:
        print('SKIP: ONNX Runtime unavailable: ' + why)
        sys.exit(77)
    with tempfile.NamedTemporaryFile(suffix='.f32') as f:
        f.write(np.ascontiguousarray(x, np.float32).tobytes())
        f.flush()
        r = subprocess.run(['node', os.path.join(ROOT, 'tools', 'export_check_ort.js'), model, f.name] +
                           [str(d) for d in x.shape], capture_output=True, text=True)
    if r.returncode != 0:
        print('ONNX Runtime failed: ' + r.stderr.strip())
        sys.exit(1)
    res = json.loads(r.stdout)
    outs = {}
    for n in names:
        o = res['outputs'][n]
        outs[n] = np.array(o['data'], np.float32).reshape(o['dims'])
    return res['runtime'], outs


def main():
    args = sys.argv[1:]
    classes = None
    if '--classes' in args:
        i = args.index('--classes')
        classes = json.loads(args[i + 1])
        del args[i:i + 2]
    if len(args) < 4 or args[0] not in ('opencv', 'ort'):
        print(__doc__)
        sys.exit(1)
    runtime, model, inp = args[:3]
    refs = dict(a.split('=', 1) for a in args[3:])
    x = np.load(inp).astype(np.float32)
    names = list(dict.fromkeys(n.split('@')[0] for n in refs))
    engine, outs = (run_opencv if runtime == 'opencv' else run_ort)(model, x, names)
    ok = True
    for n in refs:
        ours = np.load(refs[n])
        theirs = np.asarray(outs[n.split('@')[0]]).reshape(ours.shape)
        if n.endswith('@log'):  # below 1e-30 (rounded to 0 where logits are far apart) both count as 1e-30
            ours, theirs = (np.log(np.maximum(v.astype(np.float64), 1e-30)) for v in (ours, theirs))
        spread = float(ours.max() - ours.min())
        worst = float(np.abs(theirs - ours).max())
        good = worst <= TOLERANCE * spread
        ok &= good
        print('%s %s: max |theirs - ours| = %.3g, %.3g of the spread %.4g%s' %
              (engine, n, worst, worst / spread if spread else 0, spread, '' if good else '  MISMATCH'))
    if classes is not None:
        import onnx
        meta = {p.key: p.value for p in onnx.load(model).metadata_props}
        got = json.loads(meta.get('classes', 'null'))
        print('metadata classes: %s' % got)
        ok &= got == classes
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
