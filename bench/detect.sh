#!/bin/sh
# The detector, measured (writes results/detect.md):
#  1. accuracy on the raccoon test split (40 photos, never used in training or in choosing anything): each of the six
#     shipped members alone, the six-model ensemble (the paper's softmax average), and the cascade; mAP at IoU 0.5
#     under the VOC protocol and under the ILSVRC devkit's (per-box thresholds min(0.5, wh/((w+10)(h+10)))).
#     Every run scores the same saved Selective Search proposals, so the rows differ only in their networks.
#  2. speed and memory of the whole pipeline (proposals included) with the shipped ensemble, and its peak memory for
#     8 and for 40 photos;
#  3. six full GoogLeNets (configs/googlenet.cfg, 200 ILSVRC classes + background, random weights exported by
#     tools/reference.py and imported) on 500 px VOC photos with about 1,000 proposals each, against the floor:
#     6 x regions / the forward throughput of one GoogLeNet at the detector's batch, measured in the same run.
# Each part rewrites its own section of results/detect.md and keeps the others.
# Usage: bench/detect.sh [accuracy] [speed] [googlenet]   (default: all three; GOOGLENET_IMAGES=2 to change how
#        many photos the GoogLeNet timing uses)
set -eu
parts="${*:-accuracy speed googlenet}"
want() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
cd "$(dirname "$0")/.."
B=build/inception
W=out/bench-detect
R=data/raccoon
L=$R/ImageSets/Main/test.txt
PY=/usr/bin/python3
NG=${GOOGLENET_IMAGES:-2}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target inception bench_forward >/dev/null
mkdir -p $W
HERE=$(pwd)
now() { date +%s.%N; }
map_of() { sed -n 's/^Mean AP: *//p'; }

CONFIG=$(sed -n 's|^config = \.\./\.\./||p' models/raccoon/ensemble.cfg | head -1) # the members' config
# An ensemble file for some members of the shipped ensemble (extra detector lines in $3).
ensemble() { # NAME "MEMBERS" "EXTRA"
    {
        echo "[detector]"
        echo "classes = raccoon"
        echo "background = true"
        echo "$3"
        for k in $2; do
            echo "[member]"
            echo "config = $HERE/$CONFIG"
            echo "weights = $HERE/models/raccoon/member-$k.safetensors"
        done
    } > $W/$1.cfg
}
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
flags=$(grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')
machine="$(date -u +%Y-%m-%d), $(git rev-parse --short HEAD), $(nproc) cores: $cpu; ${flags% }"
# section NAME: puts $W/NAME.md into results/detect.md (under its title line)
section() {
    [ -f results/detect.md ] || echo "# Detection: accuracy, speed and memory" > results/detect.md
    $PY bench/results_section.py $W/$1.md results/detect.md
}

if want accuracy; then
echo "bench: proposals of the test photos" >&2
$B proposals --list $L --root $R/JPEGImages --ext .jpg -o $W/proposals.json --quiet
NPROP=$($PY -c "import json; d = json.load(open('$W/proposals.json')); print(round(sum(len(i['boxes']) for i in d['images']) / len(d['images'])))")

# one row: FILE-NAME "LABEL" ensemble-file extra-flags
row() {
    t0=$(now)
    $B detect --list $L --root $R/JPEGImages --ext .jpg --ensemble $3 --proposals $W/proposals.json \
        -o $W/$1.json --quiet $4
    t1=$(now)
    voc=$($B eval --pred $W/$1.json --gt $R/Annotations --list $L --iou 0.5 2>/dev/null | map_of)
    ilsvrc=$($B eval --pred $W/$1.json --gt $R/Annotations --list $L 2>/dev/null | map_of)
    secs=$(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }')
    echo "| $2 | $voc | $ilsvrc | $secs |" >> $W/rows.md
    echo "bench: $2: VOC $voc, ILSVRC $ilsvrc, $secs s" >&2
}

: > $W/rows.md
for k in 1 2 3 4 5 6; do
    ensemble member-$k "$k" ""
    row member-$k "member $k alone" $W/member-$k.cfg ""
done
ensemble six "1 2 3 4 5 6" ""
row six-nobbox "ensemble of 6 (exact), no box regression" $W/six.cfg "--no-bbox-reg"
row six "ensemble of 6 (exact)" $W/six.cfg ""
row cascade "ensemble of 6, --cascade (0.5)" $W/six.cfg "--cascade"
$B detect --list $L --root $R/JPEGImages --ext .jpg --ensemble models/raccoon/ensemble.cfg -o $W/shipped.json --quiet
full=$($B eval --pred $W/shipped.json --gt $R/Annotations --list $L --iou 0.5 2>/dev/null | map_of)

# The cascade's threshold, on training photos (the last 40 of train.txt: the members saw them in training, so
# their mAP is optimistic; what matters here is how much each threshold changes the exact ensemble's result).
echo "bench: the cascade's threshold on training photos" >&2
tail -40 $R/ImageSets/Main/train.txt > $W/val.txt
$B proposals --list $W/val.txt --root $R/JPEGImages --ext .jpg -o $W/val-proposals.json --quiet
: > $W/cascade.md
for c in exact 0.9 0.7 0.5 0.3; do
    flag=""
    [ $c = exact ] || flag="--cascade=$c"
    t0=$(now)
    $B detect --list $W/val.txt --root $R/JPEGImages --ext .jpg --ensemble $W/six.cfg \
        --proposals $W/val-proposals.json -o $W/val-$c.json --quiet $flag
    t1=$(now)
    m=$($B eval --pred $W/val-$c.json --gt $R/Annotations --list $W/val.txt --iou 0.5 2>/dev/null | map_of)
    echo "$c $m $t0 $t1" >> $W/cascade.md
done
$PY - "$W" "$NPROP" "$machine" "$CONFIG" "$full" "$(cat models/raccoon/logs/train.txt)" > $W/accuracy.md <<'EOF'
import sys
w, nprop, machine, config, full, trained = sys.argv[1:]
rows = open(f"{w}/rows.md").read().rstrip("\n")
casc = [l.split() for l in open(f"{w}/cascade.md")]
t_exact = float(casc[0][3]) - float(casc[0][2])
casc_rows = "\n".join(f"| {'exact' if c == 'exact' else c} | {m} | {float(t1) - float(t0):.1f} | "
                      f"{t_exact / (float(t1) - float(t0)):.2f} |" for c, m, t0, t1 in casc)
members = "\n".join("- " + l for l in trained.splitlines())
print(f"""## Accuracy on the raccoon test split

Command: `bench/detect.sh accuracy` ({machine}).

The 40 held-out photos of `data/raccoon` (44 raccoons), which no model saw in training and nothing was chosen on.
The shipped models (`models/raccoon/`, `bench/train_ensemble.sh`): six `{config}` networks
trained from scratch on the 160 training photos with the scratch recipe (`results/training.md`), differing in seed (initial weights,
order of the regions, flips, dropout) and in sampling (share of positives, of hard background, jitter):

{members}

Every row of the table scores the same Selective Search proposals (the detector's setting, {nprop} per photo),
warped with 16 px of context, per-class NMS at 0.3, at most 100 detections per photo, each member's box
regression applied unless the row says otherwise. mAP at IoU 0.5: the VOC protocol (`eval --iou 0.5`) and the
ILSVRC devkit's (`eval`, per-box thresholds, here the same 0.5 for all but tiny boxes). Seconds: `detect` over
the 40 photos with the proposals given (scoring only).

| networks | mAP (VOC) | mAP (ILSVRC) | seconds |
|---|---:|---:|---:|
{rows}

The shipped detector as README's first command runs it (`models/raccoon/ensemble.cfg`: Selective Search and the
MultiBox network's boxes, the six members, exact mode, box regression): **mAP {full}** (VOC, IoU 0.5).

The paper's ensemble gain was +3.9 points of mAP (Table 4: 40.9% single model, 43.9% with six); the rows above
show ours on this set. The cascade lets the first member score every region and sends on to the other five only
the regions whose background probability it puts below the threshold; the other regions keep its scores.

### The cascade's threshold, on training photos

On the last 40 photos of `train.txt` with their own saved proposals (the members were trained on them, so the
mAP is optimistic; the point is how far each threshold moves the exact ensemble's result and how much time it
saves).

| threshold | mAP (VOC, training photos) | seconds | speed-up |
|---|---:|---:|---:|
{casc_rows}
""")
EOF
section accuracy
fi

if want speed; then
echo "bench: the whole pipeline with the shipped ensemble" >&2
head -8 $L > $W/eight.txt
for i in 1 2 3 4 5; do cat $W/eight.txt; done > $W/eight5.txt      # the same 8 photos 5 times over: 40 images
for i in 1 2 3 4 5 6 7 8; do cat $W/eight5.txt; done > $W/eight40.txt # and 40 times over: 320 images
/usr/bin/time -f "%M %e" -o $W/mem8.txt $B detect --list $W/eight.txt --root $R/JPEGImages --ext .jpg \
    --ensemble models/raccoon/ensemble.cfg -o $W/eight.json --quiet
for n in 8 40 320; do # memory alone, with --cascade to be quick
    list=$W/eight.txt
    [ $n = 40 ] && list=$W/eight5.txt
    [ $n = 320 ] && list=$W/eight40.txt
    /usr/bin/time -f "%M %e" -o $W/memc$n.txt $B detect --list $list --root $R/JPEGImages --ext .jpg \
        --ensemble models/raccoon/ensemble.cfg -o $W/repeat$n.json --quiet --cascade
done
/usr/bin/time -f "%M %e" -o $W/mem40.txt $B detect --list $L --root $R/JPEGImages --ext .jpg \
    --ensemble models/raccoon/ensemble.cfg -o $W/all.json --quiet
largest=$($PY -c "
import json; d = json.load(open('$W/all.json'))
m = max(d['images'], key=lambda i: i['width'] * i['height']); print('%dx%d' % (m['width'], m['height']))")
largest8=$($PY -c "
import json; d = json.load(open('$W/eight.json'))
m = max(d['images'], key=lambda i: i['width'] * i['height']); print('%dx%d' % (m['width'], m['height']))")
read kb8 s8 < $W/mem8.txt
read kb40 s40 < $W/mem40.txt
read kbc8 sc8 < $W/memc8.txt
read kbc40 sc40 < $W/memc40.txt
read kbc320 sc320 < $W/memc320.txt
$PY - "$kb8" "$s8" "$kb40" "$s40" "$machine" "$kbc8" "$kbc40" "$kbc320" "$largest8" "$largest" "$CONFIG" \
    > $W/speed.md <<'EOF'
import sys
kb8, s8, kb40, s40, machine, kbc8, kbc40, kbc320, largest8, largest, config = sys.argv[1:]
s8, s40 = float(s8), float(s40)
print(f"""## Speed and memory of the whole pipeline (shipped ensemble)

Command: `bench/detect.sh speed` ({machine}).

`inception detect` with `models/raccoon/ensemble.cfg` (Selective Search and MultiBox proposals computed, six
`{config}` members, every region through every member, box regression):

| images | seconds | seconds an image | peak memory | largest photo |
|---|---:|---:|---:|---:|
| the first 8 test photos | {s8:.1f} | {s8 / 8:.2f} | {int(kb8) / 1024:.0f} MiB | {largest8} |
| the 40 test photos | {s40:.1f} | {s40 / 40:.2f} | {int(kb40) / 1024:.0f} MiB | {largest} |

Peak memory as the same 8 photos come back again and again (`--cascade`, to be quick): 8 images
{int(kbc8) / 1024:.0f} MiB, 40 images {int(kbc40) / 1024:.0f} MiB, 320 images {int(kbc320) / 1024:.0f} MiB. Nothing
accumulates per image: one image is in flight at a time, its detections go to the journal as it ends, and the
output is written from the journal a line at a time; the growth (most of it over the first 40 images) is, as far
as we can tell, the allocator keeping freed blocks of the large temporaries (decoded photos, the regions cut from
them, Selective Search's graphs). Peak memory also grows with the largest photo, decoded as float RGB (12
bytes a pixel), from which every region is cut.
""")
EOF
section speed
fi

if want googlenet; then
echo "bench: six GoogLeNets" >&2
sed 's/^classes *=.*/classes = 201/' configs/googlenet.cfg > $W/googlenet-201.cfg
$PY tools/reference.py export $W/googlenet-201.cfg $W/googlenet.onnx --no-aux --seed 2014 2>/dev/null
$B import $W/googlenet.onnx --config $W/googlenet-201.cfg -o $W/googlenet.safetensors --quiet
{
    echo "[detector]"
    echo "class_map = $HERE/data/ilsvrc-devkit/map_det.txt"
    echo "background = true"
    echo "batch = 64"
    for k in 1 2 3 4 5 6; do
        echo "[member]"
        echo "config = $HERE/$W/googlenet-201.cfg"
        echo "weights = $HERE/$W/googlenet.safetensors"
    done
} > $W/googlenet6.cfg
ls data/voc-sample/JPEGImages/*.jpg | head -$NG > $W/voc.txt
$B proposals --list $W/voc.txt -o $W/voc-proposals.json --quiet
vocregions=$($PY -c "import json; print(sum(len(i['boxes']) for i in json.load(open('$W/voc-proposals.json'))['images']))")
fwd=$(build/bench_forward $W/googlenet-201.cfg --weights $W/googlenet.safetensors --batch 64 --reps 3 --threads "$(nproc)")
ips=$(echo "$fwd" | $PY -c "import json, sys; print(json.load(sys.stdin)['images_per_s'])")
t0=$(now)
/usr/bin/time -f "%M %e" -o $W/memg.txt $B detect --list $W/voc.txt --ensemble $W/googlenet6.cfg \
    --proposals $W/voc-proposals.json -o $W/googlenet6.json --quiet
t1=$(now)
read kbg sg < $W/memg.txt
tg=$(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }')
$PY - "$vocregions" "$NG" "$ips" "$tg" "$kbg" "$machine" > $W/googlenet.md <<'EOF'
import sys
vocregions, ng, ips, tg, kbg, machine = sys.argv[1:]
vocregions, ng, ips, tg = int(vocregions), int(ng), float(ips), float(tg)
floor = 6 * vocregions / ips
print(f"""## Six full GoogLeNets against the floor

Command: `bench/detect.sh googlenet` ({machine}).

Six `configs/googlenet.cfg` networks (224x224, 201 outputs: the 200 ILSVRC DET classes and background; random
weights exported by `tools/reference.py` and imported, for timing) on {ng} VOC photos at 500 px, {vocregions}
Selective Search proposals in all (saved; proposals are not timed here). The floor is 6 x regions / the forward
throughput of one such GoogLeNet at the detector's batch (64), measured by `bench_forward` in this run:
{ips:.1f} images/s, so 6 x {vocregions} / {ips:.1f} = {floor:.1f} s.

| | seconds | regions/s (x 6) | vs floor | peak memory |
|---|---:|---:|---:|---:|
| floor (6 x regions x one batched forward) | {floor:.1f} | {vocregions / floor:.1f} | 1.00 | |
| `inception detect`, six GoogLeNets | {tg:.1f} | {vocregions / tg:.1f} | {tg / floor:.3f} | {int(kbg) / 1024:.0f} MiB |

The detector warps each batch of regions once for the six members (they share an input geometry), and each
photo's regions run in batches of 64 from its first region: a region's scores then depend only on its photo, so
shards and resumed runs give the same bits as one run (a region's float bits depend on its place in a batch and on
the batch's size). The last batch of each photo is partial.
""")
EOF
section googlenet
fi
