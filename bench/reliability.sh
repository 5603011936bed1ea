#!/bin/sh
# The kill test at length (tests/kill.sh, which ctest runs for 2 rounds): ROUNDS rounds each of proposals, detect
# and train SIGKILLed at random points and resumed; writes the "## Kill test" section of results/reliability.md.
# Usage: bench/reliability.sh [ROUNDS] [SEED]   (default 20 rounds, seed 1)
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${1:-20}
SEED=${2:-1}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target inception >/dev/null
OUT=$(mktemp) # intentional: mktemp's template
trap 'rm -f "$OUT" "$OUT.md"' EXIT
start=$(date +%s)
status=0
tests/kill.sh build/inception "$ROUNDS" "$SEED" >"$OUT" 2>&1 || status=$?
secs=$(($(date +%s) - start))
cat >"$OUT.md" <<SECTION
## Kill test

\`bench/reliability.sh $ROUNDS $SEED\` at commit $(git rev-parse --short HEAD) on $(date -u +%Y-%m-%d), $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), 2 cores shared with other work; $secs s, exit status $status.
Each round puts an old version of the outputs in place, starts the command, SIGKILLs it at a random moment of
its run, checks that every output is the complete old version or a complete new one, then runs it with
\`--resume\` (when a journal or checkpoint is there), each of those killed again at random until one finishes, and
checks the result against an uninterrupted run's: byte for byte for the submission, the weights and the
checkpoint, all but the timings for the JSON files, every column but speed and time for the training log.

\`\`\`
$(cat "$OUT")
\`\`\`
SECTION
/usr/bin/python3 bench/results_section.py "$OUT.md" results/reliability.md
echo "reliability: wrote results/reliability.md" >&2
exit $status
