#!/bin/sh
# MultiBox's share of the proposal stage (paper Sec. 8), measured on held-out images: the raccoon test split (40
# photos the MultiBox network never saw) and the VOC sample (100 photos of 20 other classes: the network learned
# raccoons only, so this is how far its boxes carry to other objects). For each: Selective Search in the detector's
# setting (k x2) alone, MultiBox's boxes alone (the shipped network's best 200: its K = 100, so all of them), the
# two merged (the detector's proposals), and R-CNN's setting (k x1). Then detection mAP on the raccoon test split
# with the shipped six-member ensemble, with and without the MultiBox boxes. Writes results/proposals-multibox.md.
# Usage: bench/multibox.sh   (about 3 minutes on 2 cores)
set -eu
cd "$(dirname "$0")/.."
B=build/inception
W=out/bench-multibox
R=data/raccoon
V=data/voc-sample
PY=/usr/bin/python3
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target inception >/dev/null
rm -rf $W
mkdir -p $W
MB="--multibox models/raccoon/multibox.safetensors --multibox-config configs/multibox-tiny.cfg --multibox-top 200"
ls $V/JPEGImages/*.jpg | sed 's|.*/||; s|\.jpg$||' > $W/voc.txt

# one row: SET NAME FLAGS
row() {
    case $1 in
    raccoon) in="--list $R/ImageSets/Main/test.txt --root $R/JPEGImages --ext .jpg" ;;
    voc) in="--list $W/voc.txt --root $V/JPEGImages --ext .jpg" ;;
    esac
    # shellcheck disable=SC2086
    $B proposals --eval $in $3 --quiet --report $W/$1-$2.json > /dev/null
    echo "$1 $2" >> $W/order
    echo "bench: $1 $2" >&2
}
: > $W/order
for set in raccoon voc; do
    row $set ss ""
    row $set multibox "$MB --multibox-only"
    row $set merged "$MB"
    row $set rcnn "--k-scale 1"
done

echo "bench: detection with and without MultiBox" >&2
sed '/^multibox_/d' models/raccoon/ensemble.cfg > models/raccoon/.ensemble-ss-only.cfg
det() { # NAME ENSEMBLE
    t0=$(date +%s.%N)
    $B detect --list $R/ImageSets/Main/test.txt --root $R/JPEGImages --ext .jpg --ensemble $2 -o $W/$1.json --quiet
    t1=$(date +%s.%N)
    m=$($B eval --pred $W/$1.json --gt $R/Annotations --list $R/ImageSets/Main/test.txt --iou 0.5 2>/dev/null |
        sed -n 's/^Mean AP: *//p')
    echo "$1 $m $(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }')" >> $W/det.txt
}
: > $W/det.txt
det ss-only models/raccoon/.ensemble-ss-only.cfg
det with-multibox models/raccoon/ensemble.cfg
rm -f models/raccoon/.ensemble-ss-only.cfg

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
$PY - "$W" "$cpu" "$(git rev-parse --short HEAD)" "$(nproc)" > results/proposals-multibox.md <<'EOF'
import json, sys, datetime
w, cpu, rev, cores = sys.argv[1:]
names = {"ss": "Selective Search, k x2 (the detector's)", "multibox": "MultiBox alone (best 200; K = 100)",
         "merged": "k x2 + MultiBox (the paper's proposal stage)", "rcnn": "R-CNN's setting, k x1"}
sets = {"raccoon": "raccoon test split (40 photos, 44 raccoons)", "voc": "VOC sample (100 photos, 20 classes)"}
print(f"""# MultiBox in the proposal stage

Command: `bench/multibox.sh` ({datetime.date.today()}, {rev}, {cores} cores: {cpu}).

The shipped MultiBox network (`models/raccoon/multibox.safetensors`, `bench/train_multibox.sh`): the tiny trunk
with a head of K = 100 boxes, priors by k-means of the raccoon training boxes, trained class-agnostic on the 160
raccoon training photos; each image warped whole to 96x96, one crop. Recall at IoU 0.5 and 0.7, MABO (mean over
classes of the average best overlap), proposals and seconds per image, by `inception proposals --eval`.
""")
rows = [l.split() for l in open(f"{w}/order")]
for s in sets:
    print(f"## {sets[s]}\n")
    print("| proposals | per image | recall@0.5 | recall@0.7 | MABO | s/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for st, name in rows:
        if st != s:
            continue
        r = json.load(open(f"{w}/{st}-{name}.json"))
        print(f"| {names[name]} | {r['proposals_per_image']:.0f} | {r['recall50']:.3f} | {r['recall70']:.3f} | "
              f"{r['mabo']:.3f} | {r['seconds_per_image']:.4f} |")
    print()
det = {l.split()[0]: l.split()[1:] for l in open(f"{w}/det.txt")}
print("## Detection on the raccoon test split\n")
print("The shipped six-member ensemble (`models/raccoon/ensemble.cfg`), exact mode, mAP at IoU 0.5 (VOC protocol);")
print("seconds for the 40 photos, proposals included.\n")
print("| proposals | mAP | seconds |")
print("|---|---:|---:|")
print(f"| Selective Search k x2 alone | {det['ss-only'][0]} | {det['ss-only'][1]} |")
print(f"| k x2 + MultiBox | {det['with-multibox'][0]} | {det['with-multibox'][1]} |")
print("\nThe paper reports +1 point of mAP for a single model from adding the MultiBox proposals.")
EOF
cat results/proposals-multibox.md
