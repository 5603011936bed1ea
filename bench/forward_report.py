#!/usr/bin/python3
"""Formats bench/forward.sh's measurements as results/forward.md. Usage: forward_report.py WORKDIR COMMAND"""
import json
import os
import subprocess
import sys

import numpy as np

GFLOP = 2 * 1.582671872  # per 224x224 image: 1.583 G multiply-adds (inception summary configs/googlenet.cfg)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ''


def main():
    work, command = sys.argv[1], sys.argv[2]
    rows, load = [], None
    for line in open(os.path.join(work, 'results.jsonl')):
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get('marker'):
            load = r['load']
            continue
        r['load'] = load
        rows.append(r)
    engines = []
    for r in rows:
        if r['engine'] not in engines:
            engines.append(r['engine'])
    out = ['# Forward throughput: full GoogLeNet, 224x224, 2 threads', '',
           'Command: `%s` (from the repository root), at commit %s%s.' % (
               command, sh('git rev-parse --short HEAD'),
               ' with uncommitted changes' if sh('git status --porcelain --untracked-files=no -- src include bench '
                                                 'CMakeLists.txt') else ''), '',
           'Each engine runs the same network: `tools/reference.py` builds GoogLeNet (configs/googlenet.cfg: Table 1, '
           'LRNs, Caffe ceil-mode pooling; no auxiliary heads) in PyTorch with seed 2014 and random weights and exports '
           'it to ONNX (opset 11); ONNX Runtime and OpenCV read that file, `inception import` converts it for us, and '
           'PyTorch runs the module it exported. Every engine runs in its own process, in turn, each batch size '
           'several rounds; the table gives, per engine and batch, the round with the lowest median (the least '
           'disturbed by other work on this shared machine) and the median time per image within it. GFLOP/s counts '
           '2 x 1.583 G multiply-adds per image. CPU ms/image is user + system time of all threads: what the pass '
           'costs whatever else runs. Peak RSS is the process\'s maximum resident memory (model, runtime and '
           'activations). The last column lists every round as images/s (1-minute load average as the round '
           'began; it counts this benchmark\'s own engines too, about 1 to 2 while they run, so only values well '
           'above 2 mean other work shared the machine).', '',
           '| engine | batch | ms/image (median) | images/s | GFLOP/s | CPU ms/image | peak RSS MiB | rounds: images/s (load) |',
           '|---|---:|---:|---:|---:|---:|---:|---|']
    for batch in (16, 1):
        for eng in engines:
            rs = [r for r in rows if r['engine'] == eng and r['batch'] == batch]
            if not rs:
                continue
            best = min(rs, key=lambda r: r['ms_per_image'])
            out.append('| %s | %d | %.1f | %.1f | %.0f | %.1f | %.0f | %s |' % (
                eng, batch, best['ms_per_image'], best['images_per_s'], GFLOP * best['images_per_s'],
                best['cpu_ms_per_image'], best['peak_rss_mb'],
                ', '.join('%.1f (%s)' % (r['images_per_s'], r['load']) for r in rs)))
    # the targets of issue 14: at most 0.7x ONNX Runtime's time per image at batch 16, 0.8x at batch 1 (fp32)
    def best_of(engine, batch):
        rs = [r for r in rows if r['engine'] == engine and r['batch'] == batch]
        return min(rs, key=lambda r: r['ms_per_image']) if rs else None
    ort_name = next((e for e in engines if e.startswith('ONNX Runtime')), None)
    out += ['', 'The machine may be shared with other work (the load column); every engine is measured in the same '
            'run, interleaved, and the best round of each is kept.', '']
    for batch, target in ((16, 0.7), (1, 0.8)):
        ort = best_of(ort_name, batch)
        for eng in (e for e in engines if e.startswith('inception')):
            ours = best_of(eng, batch)
            if ours and ort:
                out.append('- batch %d: %s %.1f ms/image (%.0f GFLOP/s, kernels: %s), ONNX Runtime %.1f: %.2fx its '
                           'time%s.' % (batch, eng, ours['ms_per_image'], GFLOP * ours['images_per_s'],
                                        ours.get('isa', '?'), ort['ms_per_image'],
                                        ours['ms_per_image'] / ort['ms_per_image'],
                                        ' (fp32 target: %.1fx)' % target if 'bf16' not in eng else ''))
    # agreement of the logits on the same input
    out += ['', '## Outputs', '']
    for batch in (16, 1):
        ours = np.fromfile(os.path.join(work, 'c%d.f32' % batch), dtype=np.float32)
        parts = []
        for name, label in (('ort', 'ONNX Runtime'), ('torch', 'PyTorch'), ('cv', 'OpenCV')):
            path = os.path.join(work, '%s%d.f32' % (name, batch))
            if os.path.exists(path):
                other = np.fromfile(path, dtype=np.float32)
                if other.size == ours.size:
                    parts.append('%s %.2g' % (label, float(np.abs(other - ours).max())))
        out.append('- batch %d: max |logit difference| from ours (logits up to %.0f): %s' % (
            batch, float(np.abs(ours).max()), ', '.join(parts)))
        path = os.path.join(work, 'cb%d.f32' % batch)
        if os.path.exists(path):
            b16 = np.fromfile(path, dtype=np.float32)
            agree = (b16.reshape(batch, -1).argmax(1) == ours.reshape(batch, -1).argmax(1)).mean()
            out.append('- batch %d, ours in bf16 against ours in fp32: max |logit difference| %.2g, top-1 the same for '
                       '%.0f%% of the images' % (batch, float(np.abs(b16 - ours).max()), 100 * agree))
    out += ['', '## Machine and versions', '', '```',
            sh("lscpu | grep -E '^(Architecture|Model name|CPU\\(s\\)|Thread|Core|Socket|L1d|L2|L3)'"),
            'vector extensions: ' + sh("grep -o -w -E 'avx2|fma|avx512f|avx512bw|avx512vl|avx512dq|avx512_bf16|avx512_vnni|amx_tile|amx_bf16' /proc/cpuinfo | sort -u | tr '\\n' ' '"),
            'cpu family/model: ' + sh("grep -m2 -E '^(cpu family|model\\s)' /proc/cpuinfo | awk -F: '{print $2}' | tr '\\n' ' '"),
            'memory: ' + sh("free -g | awk '/Mem/ {print $2 \" GiB\"}'"),
            'load average after the run: ' + sh('cut -d" " -f1-3 /proc/loadavg'),
            sh('uname -srm'),
            sh('gcc --version | head -1'),
            'OpenBLAS ' + sh("dpkg-query -W -f='${Version}' libopenblas0-pthread"),
            'node ' + sh('node --version'),
            sh("/usr/bin/python3 -c 'import torch, cv2, numpy; print(\"torch\", torch.__version__, \"| opencv\", cv2.__version__, \"| numpy\", numpy.__version__)'"),
            '```', '']
    print('\n'.join(out))


if __name__ == '__main__':
    main()
