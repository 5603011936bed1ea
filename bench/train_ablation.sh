#!/bin/sh
# Learning from small data, lever by lever: each row of ROWS trains one member of the family from scratch on the
# raccoon set's tuning split (data/raccoon/ImageSets/Main/train-fit.txt, 128 training photos) and measures it on
# the other 32 training photos (train-val.txt) through the detector's own chain: every Selective Search proposal
# scored, NMS 0.3, VOC mAP at IoU 0.5. The 40 test photos are not touched here. Each row runs with several
# seeds, because 32 photos make a noisy figure; the table gives the mean and every seed.
# Writes out/ablation/ablation.csv (one line per run; finished runs are not redone) and prints the table.
# Usage: bench/train_ablation.sh [epochs] [seeds] [row names...]   (ROWS below; default: all rows)
set -eu
cd "$(dirname "$0")/.."
epochs="${1:-8}"
seeds="${2:-1 2}"
[ $# -ge 2 ] && shift 2 || shift $#
BIN=${BIN:-build/inception}
D=data/raccoon/ImageSets/Main
O=out/ablation
[ -x $BIN ] || { echo "build first (scripts/setup.sh)" >&2; exit 1; }
mkdir -p $O

# name | config | flags (each row is measured against the rows above it)
ROWS='
paper      | googlenet-tiny.cfg       | --recipe paper
cosine     | googlenet-tiny.cfg       | --recipe paper --schedule cosine
scratch    | googlenet-tiny.cfg       | --recipe scratch
bn         | googlenet-tiny-bn.cfg    | --recipe scratch
quarter-bn | googlenet-quarter-bn.cfg | --recipe scratch
hard0.5    | googlenet-quarter-bn.cfg | --recipe scratch --hard-fraction 0.5
jitter0.1  | googlenet-quarter-bn.cfg | --recipe scratch --jitter 0.1
nopolyak   | googlenet-quarter-bn.cfg | --recipe scratch --polyak 0
lr0.03     | googlenet-quarter-bn.cfg | --recipe scratch --lr 0.03
pos0.5     | googlenet-quarter-bn.cfg | --recipe scratch --pos-fraction 0.5
epochs16   | googlenet-quarter-bn.cfg | --recipe scratch --epochs 16
'

# The proposals of all 160 training photos, computed once (the detector's Selective Search setting).
P=$O/proposals-train.json
[ -f $P ] || $BIN proposals --list $D/train.txt --root data/raccoon/JPEGImages --ext .jpg -o $P --quiet

run_row() { # name config flags seed
    out=$O/$1-s$4
    [ -f $out/done ] && return 0
    rm -rf "$out"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    $BIN train --config configs/$2 --classes 2 --epochs "$epochs" --seed "$4" --out "$out" --data $D/train-fit.txt \
        --val $D/train-val.txt --proposals $P --val-proposals $P --quiet $3
    end=$(date +%s.%N)
    last=$(tail -1 "$out/log.csv")
    map=$(echo "$last" | cut -d, -f7) acc=$(echo "$last" | cut -d, -f5)
    secs=$(echo "$start $end" | awk '{ printf "%.0f", $2 - $1 }')
    ep=$(echo "$3" | sed -n 's/.*--epochs \([0-9]*\).*/\1/p')
    echo "$1,$2,$3,$4,${ep:-$epochs},$map,$acc,$secs" >> $O/ablation.csv
    touch $out/done
}

[ -f $O/ablation.csv ] || echo "row,config,flags,seed,epochs,map,region_acc,seconds" > $O/ablation.csv
echo "$ROWS" | while IFS='|' read -r name config flags; do
    name=$(echo $name) config=$(echo $config) flags=$(echo $flags)
    [ -n "$name" ] || continue
    if [ $# -gt 0 ]; then
        case " $* " in *" $name "*) ;; *) continue ;; esac
    fi
    for s in $seeds; do run_row "$name" "$config" "$flags" "$s"; done
done

# The table: mean mAP, mean region accuracy and mean seconds per row, each seed's mAP.
echo "| row | config | flags | epochs | mAP (mean) | each seed | region accuracy | seconds |"
echo "|---|---|---|---:|---:|---|---:|---:|"
awk -F, 'NR > 1 { k = $1 SUBSEP $5; if (!(k in n)) order[++m] = k; n[k]++; cfg[k] = $2; fl[k] = $3; ep[k] = $5;
    map[k] += $6; acc[k] += $7; sec[k] += $8; each[k] = each[k] (each[k] == "" ? "" : ", ") sprintf("%.3f", $6) }
    END { for (i = 1; i <= m; i++) { k = order[i]; split(k, a, SUBSEP);
        printf "| %s | %s | `%s` | %d | %.3f | %s | %.3f | %.0f |\n", a[1], cfg[k], fl[k], ep[k], map[k] / n[k],
            each[k], acc[k] / n[k], sec[k] / n[k] } }' $O/ablation.csv
