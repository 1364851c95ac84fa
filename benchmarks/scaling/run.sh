#!/bin/bash
# Time per distillation iteration with 1 and 2 processes on the CPU (see README.md here).
# usage: benchmarks/scaling/run.sh WORKDIR   (needs .venv from ./dev.sh setup and Fashion-MNIST)
#   ROUNDS=N (default 2): rounds of the three variants, the order reversed every other round
#   ITERATIONS=N (default 10): distillation iterations per run
# Every variant runs in a session of its own (setsid): the kernel's autogroup scheduler shares the
# CPU between sessions, and torchrun puts each worker in a session of its own, so a plain process
# left in this shell's session would get less CPU than the workers for the same work.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?give a work folder}
bin=.venv/bin
rounds=${ROUNDS:-2}
export OMP_NUM_THREADS=1
[ -f "$work/buffer/buffer.json" ] || setsid --wait $bin/ddtool buffer --dataset fashion-mnist --out "$work/buffer" \
    --num-experts 2 --epochs 4 --width 32 --train-subset 500 --threads 1 --device cpu --quiet
args=(distill --dataset fashion-mnist --buffer "$work/buffer" --ipc 10 --syn-steps 20 --expert-epochs 2
      --max-start-epoch 2 --iterations "${ITERATIONS:-10}" --device cpu --threads 1 --quiet --checkpoint-every 0
      --overwrite)
results="$work/times.txt"
: > "$results"
variant() {   # variant NAME: run it in its own session; append "NAME s/iteration loss load-before load-after"
    local name=$1 out="$work/$1" before
    before=$(cut -d' ' -f1 /proc/loadavg)
    case $name in
        one) setsid --wait $bin/ddtool "${args[@]}" --out "$out" >/dev/null ;;
        *) setsid --wait $bin/torchrun --standalone --nproc-per-node 2 --no-python $bin/ddtool "${args[@]}" \
               --out "$out" --parallel "$name" >/dev/null ;;
    esac
    $bin/python -c "import json,sys; m=json.load(open(sys.argv[1]+'/metrics.json')); \
print(sys.argv[2], round(m['seconds_per_iteration'], 3), m['history'][-1]['loss'], sys.argv[3], \
open('/proc/loadavg').read().split()[0])" "$out" "$name" "$before" | tee -a "$results"
}
for ((r = 0; r < rounds; r++)); do
    if ((r % 2 == 0)); then order=(one batch segments); else order=(segments batch one); fi
    for v in "${order[@]}"; do variant "$v"; done
done
$bin/python - "$results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
times = {}
for name, secs, loss, before, after in rows:
    times.setdefault(name, []).append(float(secs))
loads = [float(x) for row in rows for x in row[3:5]]
one = statistics.median(times["one"])
print(f"median s/iteration over {len(times['one'])} round(s), load average {min(loads):.2f}-{max(loads):.2f} "
      f"(every variant in its own session):")
for name, label in (("one", "1 process"), ("batch", "2 processes, batch"), ("segments", "2 processes, segments")):
    m = statistics.median(times[name])
    print(f"  {label:24s} {m:7.2f} s/iteration   ratio to 1 process {one / m:.2f}x")
EOF
