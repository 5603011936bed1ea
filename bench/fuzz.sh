#!/bin/sh
# Fuzzes every reader of the tool with libFuzzer (tests/fuzz/fuzz.c: one harness per kind of input) and writes
# results/fuzz.md: executions, coverage and findings per harness. Seeds are the real files of data/ and tests/data/
# (and small ones made here by the tool itself); the corpora grow in build-fuzz/corpus/ and are kept between runs.
# A finding (crash, leak, timeout, sanitizer report) leaves its input in build-fuzz/findings/TARGET/; replay it with
# build-fuzz/tests/fuzz/fuzz_TARGET FILE, and add it to the regression tests.
# Usage: bench/fuzz.sh [-t SECONDS] [-r RUNS] [TARGET...]   (default: 300 s or 1,000,000 runs each, every target)
set -eu
cd "$(dirname "$0")/.."
SECONDS_EACH=300
RUNS=1000000
while getopts t:r: opt; do
    case $opt in
    t) SECONDS_EACH=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
ALL="submission detections_json detect_output proposals_json proposals_config net_config ensemble image_list
sample_list class_map class_map_mat blacklist annotation ground_truth_mat npy safetensors onnx caffe prototxt
checkpoint priors image"
TARGETS="${*:-$ALL}"
HERE=$(pwd)
F=build-fuzz
R=results/fuzz.md

CC=clang CXX=clang++ cmake -S . -B $F -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINCEPTION_FUZZ=ON >/dev/null
cmake --build $F -j "$(nproc)" --target $(for t in $TARGETS; do printf 'fuzz_%s ' "$t"; done) >/dev/null
BUILT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include tests/fuzz || echo +) # what the harnesses are built from
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target inception >/dev/null

# Seeds the tool makes: proposals and detections JSON, a checkpoint, a small ground-truth cache, an ensemble file.
S=$F/seeds-made
if [ ! -f $S/done ]; then
    mkdir -p $S
    B=build/inception
    $B proposals tests/data/proposals/2007_000027.jpg --max 50 -o $S/proposals.json --quiet
    printf 'ensemble=1\n[detector]\nclasses = raccoon\nbackground = true\nbatch = 8\n[member]\nconfig = %s\nweights = %s\n' \
        "$HERE/configs/googlenet-tiny.cfg" "$HERE/tests/data/tiny-members/member-1.safetensors" |
        sed 1d >$S/ensemble.cfg
    printf '%s\n' tests/data/proposals/2007_000027.jpg >$S/one.txt
    $B detect --list $S/one.txt --ensemble $S/ensemble.cfg --proposals $S/proposals.json -o $S/detections.json \
        --submission $S/submission.txt --quiet
    # the harness's ground truth has ILSVRC's 200 classes: the same detections under the first one's name
    sed 's/"raccoon"/"accordion"/g' $S/detections.json >$S/detections-ilsvrc.json
    for i in 39 131 150 151; do echo "$HERE/tests/data/detset/JPEGImages/raccoon-$i.jpg $((i % 2))"; done >$S/samples.txt
    $B train --config configs/googlenet-tiny.cfg --data $S/samples.txt --classes 2 --steps 1 --batch 2 --seed 1 \
        --out $S/train --quiet
    /usr/bin/python3 - "$S/gt.mat" <<'EOF'
import sys, numpy as np, scipy.io
ids = np.arange(1, 6, dtype=np.double)
labels = np.empty((1, 5), dtype=object); boxes = np.empty((1, 5), dtype=object); thr = np.empty((1, 5), dtype=object)
for i in range(5):
    labels[0, i] = np.array([[1 + i, 7]], dtype=np.double)
    boxes[0, i] = np.array([[10, 20, 100, 120], [5, 5, 50, 60]], dtype=np.double).T
    thr[0, i] = np.array([[0.5, 0.5]])
scipy.io.savemat(sys.argv[1], {"gt_img_ids": ids, "gt_obj_labels": labels, "gt_obj_bboxes": boxes,
                               "gt_obj_thr": thr}, do_compression=True)
EOF
    touch $S/done
fi

seeds() {
    case $1 in
    submission) echo $S/submission.txt; head -300 data/ilsvrc-devkit/demo.val.pred.det.txt >$S/demo-head.txt; echo $S/demo-head.txt ;;
    detections_json) echo $S/detections-ilsvrc.json ;;
    detect_output) echo $S/detections.json ;;
    proposals_json) echo $S/proposals.json ;;
    proposals_config) ls configs/proposals*.cfg ;;
    net_config) ls configs/*.cfg | grep -v proposals ;;
    ensemble) echo $S/ensemble.cfg ;;
    image_list) ls tests/data/detset/ImageSets/Main/*.txt; echo $S/one.txt ;;
    sample_list) echo $S/samples.txt ;;
    class_map) echo data/ilsvrc-devkit/map_det.txt ;;
    class_map_mat) echo data/ilsvrc-devkit/meta_det.mat ;;
    blacklist) head -50 data/ilsvrc-devkit/ILSVRC2015_det_validation_blacklist.txt >$S/blacklist.txt; echo $S/blacklist.txt ;;
    annotation) ls tests/data/detset/Annotations/*.xml tests/data/proposals/*.xml data/ilsvrc-devkit/sample-annotation/*.xml ;;
    ground_truth_mat) echo $S/gt.mat ;;
    npy) ls tests/data/batchnorm/*.npy tests/data/bbox/*.npy | head -8 ;;
    safetensors) echo tests/data/tiny-members/member-1.safetensors ;;
    onnx) ls tests/data/other-topology.onnx tests/data/onnx-forms/*.onnx ;;
    caffe) ls tests/data/caffe/*.caffemodel ;;
    prototxt) ls tests/data/caffe/*.prototxt ;;
    checkpoint) echo $S/train/checkpoint.bin ;;
    priors) echo models/raccoon/multibox-priors.json ;;
    image) ls tests/data/formats/pattern.* tests/data/detset/JPEGImages/raccoon-39.jpg ;;
    esac
}

CPU=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
ROWS=$F/rows # one row a harness, from its latest run: a run of some harnesses keeps the others' rows
mkdir -p $ROWS

# The table row of a harness: executions in all over the runs that grew its corpus (ROWS/TARGET.runs: one line a
# run, "executions commit"), and from the latest run's log its rate, edges, features, corpus and findings.
row() {
    log=$F/fuzz-$1.log
    total=$(awk '{ n += $1 } END { print n + 0 }' $ROWS/$1.runs)
    runs=$(wc -l <$ROWS/$1.runs)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' $log | tail -1)
    cov=$(grep -o 'cov: [0-9]*' $log | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' $log | tail -1 | cut -d' ' -f2)
    reports=$(grep -c '==ERROR\|deadly signal\|ALARM: working on the last Unit\|out-of-memory\|runtime error' $log || true)
    found=$(ls $F/findings/$1 | wc -l)
    verdict="none"
    [ "$reports" -eq 0 ] && [ "$found" -eq 0 ] || verdict="**$reports report(s), $found input(s) in findings/$1**"
    [ "$runs" -gt 1 ] && total="$total ($runs runs)"
    echo "| $1 | $total | ${rate:-?} | ${cov:-?} | ${ft:-?} | $(ls $F/corpus/$1 | wc -l) | $verdict | $2 |"
}

for t in $TARGETS; do
    C=$F/corpus/$t
    X=$F/findings/$t
    mkdir -p $C $X
    for s in $(seeds $t); do cp "$s" $C/ 2>/dev/null || true; done
    echo "fuzz: $t ($SECONDS_EACH s or $RUNS runs)" >&2
    # -rss_limit_mb: the tool's documented limits let a reader hold 1 GiB for a 1 GiB input; inputs here are small
    ASAN_OPTIONS=detect_leaks=1 $F/tests/fuzz/fuzz_$t -max_total_time=$SECONDS_EACH -runs=$RUNS -timeout=10 \
        -rss_limit_mb=2048 -max_len=1048576 -artifact_prefix=$X/ -print_final_stats=1 $C >$F/fuzz-$t.log 2>&1 || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' $F/fuzz-$t.log | tail -1)
    echo "${execs:-0} $BUILT" >>$ROWS/$t.runs
    row $t "$BUILT $(date -u +%m-%d)" >$ROWS/$t
done

cat >$F/fuzz-section.md <<EOF
## Fuzzing

\`bench/fuzz.sh [-t SECONDS] [-r RUNS]\` (each harness until RUNS executions or SECONDS; the latest run:
\`-t $SECONDS_EACH -r $RUNS\`), $CPU, one core a harness (the machine's two shared with other work); each row says the commit its latest run was built from and
the day (UTC); *executions* add up the runs that grew the harness's corpus since its last finding was fixed: clang 14 libFuzzer with AddressSanitizer, UBSan and
leak checking over the whole library (\`-DINCEPTION_FUZZ=ON\`). Each harness writes its input to a file and reads it
through the call the tool makes (\`tests/fuzz/fuzz.c\`); almost every input is refused with an error, which is the
expected outcome. *executions*: inputs run; *cov*: code edges reached (our code and the instrumented parts only:
libmatio, libxml2, jansson, protobuf-c, OpenCV and zlib are Debian's uninstrumented builds, fuzzed through our
calls but not guided inside); *corpus*: inputs kept. A finding is a crash, leak, timeout (10 s) or sanitizer report.

| harness | executions | exec/s | cov | features | corpus | findings | run |
|---|---|---|---|---|---|---|---|
$(for t in $ALL; do [ -f $ROWS/$t ] && cat $ROWS/$t; done)

The findings of earlier runs (a run stops at its first) were fixed and their inputs kept in \`tests/data/fuzz/\`,
replayed by the \`fuzz_replay_*\` ctests; \`results/reliability.md\` lists them. A run stopped by hand (SIGINT, once
its corpus's total passed the goal) counts the executions it made.
EOF
/usr/bin/python3 bench/results_section.py $F/fuzz-section.md $R
echo "fuzz: wrote $R" >&2
