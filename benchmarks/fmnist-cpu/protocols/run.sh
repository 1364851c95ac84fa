#!/usr/bin/env bash
# Evaluation protocols and cross-architecture evaluation of the IPC 10 sets of ../table.md.
# Needs the cells' synthetic.pt files (run 'ddtool bench benchmarks/fmnist-cpu/spec.toml' first).
# Run from the repository root: bash benchmarks/fmnist-cpu/protocols/run.sh
set -euo pipefail
B=benchmarks/fmnist-cpu
O=$B/protocols
EDF=$B/cells/fashion-mnist/ipc10/datm_cpd_dae/run/synthetic.pt
MTT=$B/cells/fashion-mnist/ipc10/mtt/run/synthetic.pt
common=(--runs 3 --epochs 300 --device cpu --seed 0 --quiet --full-results $B/full/fashion-mnist/full-data.json)
# t NAME ARGS...: run 'ddtool ARGS' unless $O/NAME.json exists (so a rerun only does what is missing)
t() { local name=$1; shift; [ -f $O/$name.json ] && return; local s=$SECONDS; ddtool "$@" --json $O/$name.json
      echo "$name: $((SECONDS - s)) s" >> $O/times.txt; }
t teacher train-full --dataset fashion-mnist --width 32 --epochs 10 --save-model $O/teacher.pt \
    --full-results $O/teacher-full.json --device cpu --seed 0 --quiet
for p in standard soft kd soft-no-teacher; do
  extra=(); [ $p = kd ] || [ $p = soft-no-teacher ] && extra=(--teacher $O/teacher.pt)
  t "edf-$p" eval --synthetic $EDF --protocol $p "${extra[@]}" "${common[@]}"
done
t mtt-kd eval --synthetic $MTT --protocol kd --teacher $O/teacher.pt "${common[@]}"
t random-kd eval --random-ipc 10 --dataset fashion-mnist --width 32 --protocol kd --teacher $O/teacher.pt "${common[@]}"
t edf-alexnet eval --synthetic $EDF --model AlexNet --width 32 "${common[@]}"
t mtt-alexnet eval --synthetic $MTT --model AlexNet --width 32 "${common[@]}"
t random-alexnet eval --random-ipc 10 --dataset fashion-mnist --model AlexNet --width 32 "${common[@]}"
