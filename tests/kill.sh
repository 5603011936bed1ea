#!/bin/sh
# Kills `proposals`, `detect` and `train` with SIGKILL at random points, ROUNDS times each, and checks what users
# rely on after a crash or a power cut:
#  - the output is the complete old version or the complete new one, never a mixture or a torn file;
#  - a run continued with --resume (as many times as it takes, itself killed again at random) ends with the
#    uninterrupted run's result: byte for byte for the submission and the trained weights, and for the JSON files
#    all but the timings ("seconds");
#  - a journal or temporary a killed run left is continued, removed or ignored by the next run; what remains at the
#    end is counted.
# Usage: tests/kill.sh INCEPTION_BINARY ROUNDS [SEED]    (ctest runs a few rounds; bench/reliability.sh many)
# Prints one summary line per command ("kill: proposals 20 rounds, 20 kills landed mid-run, 0 failures, ...") and
# exits 1 on any failure.
set -u
B=$(realpath "$1")
ROUNDS=$2
SEED=${3:-1}
cd "$(dirname "$0")/.."
HERE=$(pwd)
W=$(mktemp -d /tmp/inception-kill-XXXXXX) # intentional: mktemp's template
trap 'rm -rf "$W"' EXIT
PY=/usr/bin/python3
FAILED=0

# A deterministic stream of delays (seconds, 3 decimals) in [0, 0.9 x $1): awk's rand seeded per call.
CALL=0
delay() {
    CALL=$((CALL + 1))
    awk -v s="$SEED" -v c="$CALL" -v m="$1" 'BEGIN { srand(s * 100003 + c); printf "%.3f", rand() * 0.9 * m }'
}

# Runs "$@" (a NAME_run function, which execs the tool) in the background and SIGKILLs it after $DELAY seconds if
# it is still running. Status: 0 finished, 137 killed, else its own failure (kept in LAST_STATUS).
run_killed() {
    ("$@") >"$W/last.log" 2>&1 &
    pid=$!
    (sleep "$DELAY" && kill -9 $pid) 2>/dev/null &
    watchdog=$!
    wait $pid 2>/dev/null
    LAST_STATUS=$?
    pkill -P $watchdog 2>/dev/null
    wait $watchdog 2>/dev/null
    return $LAST_STATUS
}

# JSON equal but for "seconds" (timings differ between runs).
same_json() {
    $PY - "$1" "$2" <<'EOF'
import json, sys
def strip(x):
    if isinstance(x, dict): return {k: strip(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list): return [strip(v) for v in x]
    return x
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sys.exit(0 if strip(a) == strip(b) else 1)
EOF
}

# A safetensors file whole: its header's tensors end where the file ends.
whole_safetensors() {
    $PY - "$1" <<'EOF'
import json, os, struct, sys
p = sys.argv[1]; b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
sys.exit(0 if 8 + n + end == len(b) else 1)
EOF
}

fail() {
    echo "kill: FAILED: $*" >&2
    FAILED=$((FAILED + 1))
}

# One command: $1 name, $2 the reference run's seconds (the kills spread over it), and its functions: NAME_make_old
# (puts the old version in place), NAME_run fresh|resume (a run into $O: resumed when a journal or checkpoint is
# there), NAME_between_ok (the outputs after a kill: the old version or a whole new one), NAME_final_ok (the
# outputs after a finished run: the uninterrupted run's).
exercise() {
    name=$1
    span=$2
    landed=0
    resumes=0
    r=1
    while [ $r -le "$ROUNDS" ]; do
        rm -rf "$O" "$O".* "$O".partial
        "${name}_make_old"
        DELAY=$(delay "$span")
        if ! run_killed "${name}_run" fresh; then
            [ $LAST_STATUS -eq 137 ] || fail "$name round $r: a fresh run failed (status $LAST_STATUS): $(tail -1 "$W/last.log")"
            landed=$((landed + 1))
            "${name}_between_ok" || fail "$name round $r: after a kill at ${DELAY}s the output is neither the old nor a whole new version"
        fi
        # continue until a run finishes, each killed again at random; a run that fails by itself is a failure
        t=0
        until { DELAY=$(delay "$span"); run_killed "${name}_run" resume; }; do
            if [ $LAST_STATUS -ne 137 ]; then
                fail "$name round $r: a resumed run failed (status $LAST_STATUS): $(tail -1 "$W/last.log")"
                break
            fi
            t=$((t + 1))
            resumes=$((resumes + 1))
            if [ $t -ge 10 ]; then
                DELAY=600
                run_killed "${name}_run" resume || fail "$name round $r: the last --resume failed: $(tail -1 "$W/last.log")"
                break
            fi
        done
        "${name}_final_ok" || fail "$name round $r: after --resume the result differs from the uninterrupted run's"
        r=$((r + 1))
    done
    left=$(ls "$(dirname "$O")" | grep -c '\.tmp\.\|\.partial' || true)
    echo "kill: $name $ROUNDS rounds, $landed kills mid-run, $resumes resumed runs killed again, temporaries left at the end: $left"
}

# --- proposals: 12 raccoon photos; the old version is a run with another setting (--max 5)
ls data/raccoon/JPEGImages/*.jpg | head -12 >"$W/p.txt"
O=$W/p/out.json
mkdir -p "$W/p"
$B proposals --list "$W/p.txt" -o "$W/p-old.json" --max 5 --quiet
t0=$(date +%s.%N)
$B proposals --list "$W/p.txt" -o "$W/p-ref.json" --quiet
P_SPAN=$(echo "$(date +%s.%N) $t0" | awk '{ printf "%.2f", $1 - $2 }')
proposals_make_old() { cp "$W/p-old.json" "$O"; }
proposals_run() {
    if [ "$1" = resume ] && [ -f "$O.partial" ]; then set -- --resume; else set --; fi
    exec $B proposals --list "$W/p.txt" -o "$O" --quiet "$@"
}
proposals_final_ok() { [ -f "$O" ] && same_json "$O" "$W/p-ref.json"; }
proposals_between_ok() { cmp -s "$O" "$W/p-old.json" || proposals_final_ok; }
exercise proposals "$P_SPAN"

# --- detect: the two tiny test members on the four detset photos; old version: --max-per-image 3
cat >"$W/ens.cfg" <<EOF
[detector]
classes = raccoon
background = true
batch = 16
[member]
config = $HERE/configs/googlenet-tiny.cfg
weights = $HERE/tests/data/tiny-members/member-1.safetensors
[member]
config = $HERE/configs/googlenet-tiny.cfg
weights = $HERE/tests/data/tiny-members/member-2.safetensors
EOF
ls "$HERE"/tests/data/detset/JPEGImages/*.jpg >"$W/d.txt"
O=$W/d/out.json
mkdir -p "$W/d"
$B detect --list "$W/d.txt" --ensemble "$W/ens.cfg" -o "$W/d-old.json" --submission "$W/d-old.txt" \
    --max-per-image 3 --quiet
t0=$(date +%s.%N)
$B detect --list "$W/d.txt" --ensemble "$W/ens.cfg" -o "$W/d-ref.json" --submission "$W/d-ref.txt" --quiet
D_SPAN=$(echo "$(date +%s.%N) $t0" | awk '{ printf "%.2f", $1 - $2 }')
detect_make_old() { cp "$W/d-old.json" "$O"; cp "$W/d-old.txt" "$W/d/out.txt"; }
detect_run() {
    if [ "$1" = resume ] && [ -f "$O.partial" ]; then set -- --resume; else set --; fi
    exec $B detect --list "$W/d.txt" --ensemble "$W/ens.cfg" -o "$O" --submission "$W/d/out.txt" --quiet "$@"
}
detect_final_ok() { [ -f "$O" ] && same_json "$O" "$W/d-ref.json" && cmp -s "$W/d/out.txt" "$W/d-ref.txt"; }
# each file is old or new; the submission is renamed after the JSON, so for a moment a new JSON sits beside the
# old submission (a finished file of its own), never the other way round
detect_between_ok() {
    { cmp -s "$O" "$W/d-old.json" && cmp -s "$W/d/out.txt" "$W/d-old.txt"; } || detect_final_ok ||
        { same_json "$O" "$W/d-ref.json" && cmp -s "$W/d/out.txt" "$W/d-old.txt"; }
}
exercise detect "$D_SPAN"

# --- train: googlenet-tiny, 40 steps, a checkpoint (and the model) every 4; old version: another seed's model
for i in 39 131 150 151; do echo "$HERE/tests/data/detset/JPEGImages/raccoon-$i.jpg $((i % 2))"; done >"$W/s.txt"
train_args() { echo "--config configs/googlenet-tiny.cfg --data $W/s.txt --classes 2 --steps 40 --batch 4 --threads 1 --checkpoint-every 4 --log-every 1 --quiet"; }
$B train $(train_args) --seed 2 --out "$W/t-old"
t0=$(date +%s.%N)
$B train $(train_args) --seed 1 --out "$W/t-ref"
T_SPAN=$(echo "$(date +%s.%N) $t0" | awk '{ printf "%.2f", $1 - $2 }')
O=$W/t/model.safetensors
train_make_old() { rm -rf "$W/t"; mkdir -p "$W/t"; cp "$W/t-old/model.safetensors" "$O"; }
train_run() {
    if [ "$1" = resume ] && [ -f "$W/t/checkpoint.bin" ]; then set -- --resume; else set --; fi
    exec $B train $(train_args) --seed 1 --out "$W/t" "$@"
}
# after a kill: the old model or one the run saved whole (with a checkpoint); at the end the uninterrupted run's
# model and checkpoint, byte for byte, and its log rows (every column but the speed and the time)
train_between_ok() { cmp -s "$O" "$W/t-old/model.safetensors" || whole_safetensors "$O"; }
train_final_ok() {
    cmp -s "$O" "$W/t-ref/model.safetensors" && cmp -s "$W/t/checkpoint.bin" "$W/t-ref/checkpoint.bin" &&
        [ "$(cut -d, -f1-7 "$W/t/log.csv")" = "$(cut -d, -f1-7 "$W/t-ref/log.csv")" ]
}
exercise train "$T_SPAN"

[ $FAILED -eq 0 ] || { echo "kill: $FAILED failure(s)" >&2; exit 1; }
