#!/bin/bash
# Time per distillation iteration with 1 and 2 processes on the CPU (see README.md here).
# usage: benchmarks/scaling/run.sh WORKDIR   (needs .venv from ./dev.sh setup and Fashion-MNIST)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?give a work folder}
bin=.venv/bin
export OMP_NUM_THREADS=1
[ -f "$work/buffer/buffer.json" ] || $bin/ddtool buffer --dataset fashion-mnist --out "$work/buffer" --num-experts 2 \
    --epochs 4 --width 32 --train-subset 500 --threads 1 --device cpu --quiet
args=(distill --dataset fashion-mnist --buffer "$work/buffer" --ipc 10 --syn-steps 20 --expert-epochs 2
      --max-start-epoch 2 --iterations 10 --device cpu --threads 1 --quiet --checkpoint-every 0 --overwrite)
report() {
    $bin/python -c "import json,sys; m=json.load(open(sys.argv[1]+'/metrics.json')); \
print(sys.argv[2], 's/iteration', round(m['seconds_per_iteration'], 2), 'loss', m['history'][-1]['loss'])" "$@"
}
$bin/ddtool "${args[@]}" --out "$work/one" >/dev/null && report "$work/one" "1 process"
for mode in batch segments; do
    $bin/torchrun --standalone --nproc-per-node 2 --no-python $bin/ddtool "${args[@]}" --out "$work/$mode" \
        --parallel $mode >/dev/null && report "$work/$mode" "2 processes, $mode"
done
