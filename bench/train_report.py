#!/usr/bin/python3
"""Formats bench/train.sh's measurements as the section "## Training throughput" of results/training.md, replacing
that section if the file has it and keeping the others. Usage: train_report.py WORKDIR COMMAND OUT.md"""
import json
import os
import re
import subprocess
import sys

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ''


def network_macs():
    """Multiply-adds per 224x224 image of the inference network and of the two auxiliary heads."""
    d = json.loads(sh('build/inception summary configs/googlenet.cfg --json'))
    return float(d['totals']['macs']), float(d['aux_totals']['macs'])


def section(work, command):
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
    macs, amacs = network_macs()
    gflop = 3 * 2 * (macs + amacs) / 1e9
    batch = rows[0]['batch'] if rows else 16
    out = ['## Training throughput', '',
           'Full GoogLeNet with its two auxiliary heads (configs/googlenet.cfg), 224x224, batch %d, 2 threads. '
           'Command: `%s` (from the repository root).' % (batch, command), '',
           'Both engines train the same network from the same weights on the same batch: `tools/reference.py` '
           'builds GoogLeNet in PyTorch with seed 2014 and random weights and exports it with the heads to ONNX, '
           '`inception import` converts that file for us, and PyTorch trains the module it exported (eager, train '
           'mode). One step is the forward pass (dropout active, heads computed), the loss main + 0.3 x (loss1 + '
           'loss2), the backward pass and an SGD update (momentum 0.9, weight decay 2e-4): `net_forward_train`, '
           '`net_loss`, `net_backward` and `sgd_step` for us, `model(x)`, `loss.backward()` and `torch.optim.SGD` for '
           'PyTorch. Each engine runs in its own process, in turn, several rounds of a warm-up step and then timed '
           'steps; the table gives, per engine, the round with the lowest median step (the least disturbed by other '
           'work on this shared machine) and that median. GFLOP/s counts %.2f GFLOP per image: three times the '
           'forward pass\'s %.3f G multiply-adds (network and heads), 2 FLOP each (we skip the input gradient of '
           'the first convolution, which PyTorch skips too). CPU ms/image is user + system time of all threads. '
           'Peak RSS is the process\'s maximum resident memory (weights, gradients, momentum, activations and their '
           'gradients). Forward / backward / update are the mean time of each phase of a step. The last column '
           'lists every round as images/s (1-minute load average as the round began; it counts this benchmark\'s '
           'own engines too, about 1 to 2 while they run, so only values well above 2 mean other work shared the '
           'machine).' % (gflop, (macs + amacs) / 1e9), '',
           '| engine | threads | ms/image (median) | images/s | GFLOP/s | CPU ms/image | peak RSS MiB | forward / '
           'backward / update ms | rounds: images/s (load) |',
           '|---|---:|---:|---:|---:|---:|---:|---|---|']
    best = {}
    for eng in engines:
        rs = [r for r in rows if r['engine'] == eng]
        b = min(rs, key=lambda r: r['ms_per_image'])
        best[eng] = b
        out.append('| %s | %d | %.1f | %.2f | %.0f | %.1f | %.0f | %.0f / %.0f / %.0f | %s |' % (
            eng, b['threads'], b['ms_per_image'], b['images_per_s'], gflop * b['images_per_s'], b['cpu_ms_per_image'],
            b['peak_rss_mb'], b['forward_ms'], b['backward_ms'], b['update_ms'],
            ', '.join('%.2f (%s)' % (r['images_per_s'], r['load']) for r in rs)))
    ours = [b for e, b in best.items() if e.startswith('inception')]
    torch = [b for e, b in best.items() if e.startswith('PyTorch')]
    out.append('')
    if ours and torch:
        o, t = ours[0], torch[0]
        out.append('- This project %.2f images/s, PyTorch %.2f: %.2fx (target: at least 1x; stretch goal 1.5x). '
                   'Peak memory %.0f MiB against %.0f MiB.' % (o['images_per_s'], t['images_per_s'],
                                                            o['images_per_s'] / t['images_per_s'], o['peak_rss_mb'],
                                                            t['peak_rss_mb']))
        out.append('- Our activations (kept whole for the backward pass) take %.0f MiB and their gradients %.0f MiB '
                   '(buffers shared between values whose backward lifetimes do not overlap).' % (
                       o.get('activation_mb', 0), o.get('gradient_mb', 0)))
        out.append('- Loss of the last timed step (random weights, random labels; dropout masks differ between the '
                   'engines): ours %.2f, PyTorch %.2f.' % (o['loss'], t['loss']))
        out.append('- Where our step spends its time: `results/training-profile.md`.')
    out += ['', '### Machine and versions', '', '```',
            sh("lscpu | grep -E '^(Architecture|Model name|CPU\\(s\\)|Thread|Core|Socket|L1d|L2|L3)'"),
            'vector extensions: ' + sh("grep -o -w -E 'avx2|fma|avx512f|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\\n' ' '"),
            'memory: ' + sh("free -g | awk '/Mem/ {print $2 \" GiB\"}'"),
            'load average after the run: ' + sh('cut -d" " -f1-3 /proc/loadavg'),
            sh('uname -srm'),
            sh('gcc --version | head -1'),
            'OpenBLAS ' + sh("dpkg-query -W -f='${Version}' libopenblas0-pthread"),
            sh("/usr/bin/python3 -c 'import torch, numpy; print(\"torch\", torch.__version__, \"| numpy\", numpy.__version__)'"),
            '```', '']
    return '\n'.join(out)


def main():
    work, command, path = sys.argv[1:4]
    new = section(work, command)
    old = open(path).read() if os.path.exists(path) else ''
    m = re.search(r'^## Training throughput\n.*?(?=^## |\Z)', old, flags=re.S | re.M)
    if m:
        text = old[:m.start()] + new + ('\n' if old[m.end():] else '') + old[m.end():]
    elif old:
        text = old.rstrip('\n') + '\n\n' + new
    else:
        text = new
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == '__main__':
    main()
