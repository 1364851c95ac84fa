#!/usr/bin/env bash
# One GPU session's worth of measurements, within 9 minutes on a single H100/H200:
#
#   1. bench-speed rows: Fashion-MNIST shape (1x28x28, ConvNet-3) IPC 10 at 20 student steps, full and
#      checkpointed unroll; ImageNet shape (3x128x128, ConvNetD5) IPC 1 and IPC 10 at 40 steps,
#      checkpointed;
#   2. the budget-matched Fashion-MNIST IPC 10 protocol: 4 experts x 12 epochs (ConvNet-3 width 128,
#      SGD lr 0.01, DSA), 500 distillation iterations (syn_steps 20, expert_epochs 2, max_start_epoch 10,
#      lr_img 1000, lr_lr 1e-5, every image per student step), 5 fresh networks x 1000 epochs, for
#      '--matcher mtt' and for '--matcher datm --plugin cpd --plugin dae';
#   3. the MTT set's evaluation again with --compile (torch.compile, a cold compile cache), end to end,
#      beside the eager evaluation of step 2;
#   4. gradient matching (examples/dc, with siamese DSA) on Fashion-MNIST IPC 1 at the published
#      settings (ConvNet-3 width 128, 1000 iterations, 5 networks x 1000 epochs), for the row beside
#      DSA's published 70.6 +- 0.6: the last step, skipped when the budget is spent.
#
# Usage (from the repository root):   benchmarks/gpu/run.sh RESULTS_DIR
#   RESULTS_DIR gets speed.jsonl, one eval JSON and one metrics JSON per method, summary.json (all of
#   it, each step's time and status included), summary.md and log.txt (every command's output):
#   8 files.
#
# Environment:
#   DRY=1         check the script's logic on a CPU with tiny sizes (no install, a minute or two)
#   BUDGET_S      seconds the steps may take in all (default 510; each step gets what is left)
#   WORK          scratch folder for buffers and synthetic sets (default /tmp/ddtool-gpu-work)
#   DDTOOL_DATA   folder holding the four Fashion-MNIST IDX files (default: .data/fashion-mnist when
#                 present, else ddtool's own lookup, e.g. /usr/share/datasets/fashion-mnist)
#   PYTHON        the interpreter (default python3)
#
# The GPU machine has torch, torchvision, numpy, pluggy and tqdm but neither kornia nor captum and
# no network: put their wheels (kornia 0.9.0, kornia-rs 0.2.0, captum 0.9.0 for CPython 3.12,
# manylinux x86_64) in .whl/ at the repository root beforehand; this script installs them, and
# ddtoolbox with its plugins from this working tree, into a private folder on PYTHONPATH.
set -uo pipefail

if [ $# -ne 1 ]; then
    sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "run.sh: cannot create results folder $1" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PY="${PYTHON:-python3}"
WORK="${WORK:-/tmp/ddtool-gpu-work}"
DRY="${DRY:-}"
LOG="$OUT/log.txt"
: > "$LOG"
rm -f "$OUT/speed.jsonl" "$OUT"/*-eval.json "$OUT"/*-metrics.json "$OUT"/summary.*
rm -rf "$WORK"
mkdir -p "$WORK"
STEPS="$WORK/steps.jsonl"
: > "$STEPS"

# ---------------------------------------------------------------------------- sizes

if [ -n "$DRY" ]; then
    DEVICE=cpu
    BUDGET_S="${BUDGET_S:-600}"
    SPEED_ITERS=1; FM_STEPS=2; IN_STEPS=1; FM_WIDTH=(--width 8); IN_WIDTH=(--width 4)
    EXPERTS=2; EXPERT_EPOCHS=4; EXPERT_BATCH=32; EXPERT_LR=0.05; EXPERT_SUBSET=(--train-subset 30); WIDTH=(--width 8)
    ITERATIONS=2; SYN_STEPS=2; MAX_START=1; EXPERT_EPOCHS_MATCHED=1
    EVAL_RUNS=2; EVAL_EPOCHS=2; DAE_EVERY=1; DC_ITERATIONS=2; DC_WIDTH=(--width 8)
    EXTRA=(--threads 1)
else
    DEVICE=cuda
    BUDGET_S="${BUDGET_S:-510}"
    SPEED_ITERS=3; FM_STEPS=20; IN_STEPS=40; FM_WIDTH=(); IN_WIDTH=()
    EXPERTS=4; EXPERT_EPOCHS=12; EXPERT_BATCH=256; EXPERT_LR=0.01; EXPERT_SUBSET=(); WIDTH=(--width 128)
    ITERATIONS=500; SYN_STEPS=20; MAX_START=10; EXPERT_EPOCHS_MATCHED=2
    EVAL_RUNS=5; EVAL_EPOCHS=1000; DAE_EVERY=100; DC_ITERATIONS=1000; DC_WIDTH=(--width 128)
    EXTRA=()
fi

# ---------------------------------------------------------------------------- software

if [ -z "$DRY" ] || [ -n "${INSTALL:-}" ]; then
    SITE="$WORK/site"
    shopt -s nullglob
    wheels=(.whl/*.whl)
    shopt -u nullglob
    if [ ${#wheels[@]} -eq 0 ] && ! "$PY" -c "import kornia, captum" 2>/dev/null; then
        echo "run.sh: kornia and captum are missing and .whl/ holds no wheels; put their wheels there (see the top of this script)" >&2
        exit 2
    fi
    if [ ${#wheels[@]} -gt 0 ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "${wheels[@]}" >> "$LOG" 2>&1 || { echo "run.sh: installing .whl/*.whl failed; see $LOG" >&2; exit 2; }
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" \
        . plugins/edf plugins/datm plugins/ftd examples/dc >> "$LOG" 2>&1 \
        || { echo "run.sh: installing ddtoolbox from $ROOT failed; see $LOG" >&2; exit 2; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${DDTOOL_DATA:-}" ] && [ -f .data/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
    export DDTOOL_DATA="$ROOT/.data"
fi
export PYTHONUNBUFFERED=1

ddtool() { "$PY" -m ddtoolbox.cli "$@"; }

if ! ddtool plugins > "$WORK/plugins.txt" 2>> "$LOG" || ! grep -q "datm" "$WORK/plugins.txt" \
        || ! grep -q "dae" "$WORK/plugins.txt"; then
    echo "run.sh: ddtoolbox or its datm/edf plugins do not load; see $LOG" >&2
    exit 2
fi

# ---------------------------------------------------------------------------- steps

START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
FAILED=0

# step NAME COMMAND...: run with the time that is left; record name, seconds and exit status
step() {
    local name=$1; shift
    local now left t0 rc
    now=$(date +%s)
    left=$((DEADLINE - now))
    if [ "$left" -lt 5 ]; then
        echo "{\"step\": \"$name\", \"status\": \"skipped\", \"reason\": \"out of time\"}" >> "$STEPS"
        echo "run.sh: skipping $name: out of time" >&2
        FAILED=1
        return 1
    fi
    echo "\$ $*" >> "$LOG"
    if [ "$1" = ddtool ]; then   # timeout runs programs, not shell functions
        shift
        set -- "$PY" -m ddtoolbox.cli "$@"
    fi
    t0=$(date +%s.%N)
    timeout --signal=INT --kill-after=10 "$left" "$@" >> "$LOG" 2>&1
    rc=$?
    local secs
    secs=$("$PY" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$t0" "$(date +%s.%N)")
    local status=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 130 ] || [ "$rc" -eq 137 ]; then status=timeout; elif [ "$rc" -ne 0 ]; then status=failed; fi
    echo "{\"step\": \"$name\", \"status\": \"$status\", \"exit\": $rc, \"seconds\": $secs}" >> "$STEPS"
    echo "run.sh: $name: $status ($secs s)" >&2
    [ "$rc" -eq 0 ] || { FAILED=1; return 1; }
}

COMMON=(--device "$DEVICE" --seed 0 --quiet "${EXTRA[@]}")

# 1. speed rows
step speed-fmnist-ipc10 ddtool bench-speed --channels 1 --size 28 "${FM_WIDTH[@]}" --ipc 10 --syn-steps "$FM_STEPS" \
    --modes full checkpointed --iterations "$SPEED_ITERS" --results "$OUT/speed.jsonl" "${COMMON[@]}"
for ipc in 1 10; do
    step "speed-imagenet-ipc$ipc" ddtool bench-speed --channels 3 --size 128 --model ConvNetD5 "${IN_WIDTH[@]}" \
        --ipc "$ipc" --syn-steps "$IN_STEPS" --modes checkpointed --iterations "$SPEED_ITERS" \
        --results "$OUT/speed.jsonl" "${COMMON[@]}"
done

# 2. the budget-matched protocol
BUF="$WORK/buffer"
if step buffer ddtool buffer --dataset fashion-mnist --out "$BUF" "${WIDTH[@]}" --num-experts "$EXPERTS" \
        --epochs "$EXPERT_EPOCHS" --lr "$EXPERT_LR" --batch-size "$EXPERT_BATCH" "${EXPERT_SUBSET[@]}" "${COMMON[@]}"; then
    MATCHED=(--dataset fashion-mnist --buffer "$BUF" --ipc 10 --iterations "$ITERATIONS" --syn-steps "$SYN_STEPS"
             --expert-epochs "$EXPERT_EPOCHS_MATCHED" --max-start-epoch "$MAX_START" --lr-img 1000 --lr-lr 1e-5)
    for method in mtt datm_cpd_dae; do
        if [ "$method" = mtt ]; then
            how=(--matcher mtt)
        else
            how=(--matcher datm --plugin cpd --plugin dae --cpd-alpha 0.25 --dae-every "$DAE_EVERY")
        fi
        if step "distill-$method" ddtool distill "${MATCHED[@]}" "${how[@]}" --out "$WORK/$method" "${COMMON[@]}"; then
            cp "$WORK/$method/metrics.json" "$OUT/$method-metrics.json"
            step "eval-$method" ddtool eval --synthetic "$WORK/$method/synthetic.pt" --eval-runs "$EVAL_RUNS" \
                --eval-epochs "$EVAL_EPOCHS" --json "$OUT/$method-eval.json" "${COMMON[@]}"
        fi
    done
    # 3. the same evaluation compiled; its JSON stays in $WORK (summary.json carries it: 8 files come back)
    if [ -f "$WORK/mtt/synthetic.pt" ]; then
        TORCHINDUCTOR_CACHE_DIR="$WORK/torch-compile" step eval-mtt-compiled ddtool eval \
            --synthetic "$WORK/mtt/synthetic.pt" --eval-runs "$EVAL_RUNS" --eval-epochs "$EVAL_EPOCHS" --compile \
            --json "$WORK/mtt-eval-compiled.json" "${COMMON[@]}"
    fi
fi

# 4. gradient matching at IPC 1; its files stay in $WORK too
if step distill-dc ddtool distill --matcher dc --dataset fashion-mnist --ipc 1 --iterations "$DC_ITERATIONS" \
        "${DC_WIDTH[@]}" --out "$WORK/dc" "${COMMON[@]}"; then
    step eval-dc ddtool eval --synthetic "$WORK/dc/synthetic.pt" --eval-runs "$EVAL_RUNS" --eval-epochs "$EVAL_EPOCHS" \
        --json "$WORK/dc-eval.json" "${COMMON[@]}"
fi

# ---------------------------------------------------------------------------- summary

rm -f "$OUT"/.*.ddtool.lock        # eval --json's lock files: only 8 files come back from a device run

"$PY" - "$OUT" "$STEPS" "$((($(date +%s) - START)))" "$DEVICE" "${DRY:-0}" "$WORK" <<'EOF' || FAILED=1
import json
import sys
from pathlib import Path

out, steps_file = Path(sys.argv[1]), Path(sys.argv[2])
seconds, device, dry = int(sys.argv[3]), sys.argv[4], sys.argv[5] not in ("", "0")
work = Path(sys.argv[6])


def lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.is_file() else []


def load(name, folder=out):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


steps, speed = lines(steps_file), lines(out / "speed.jsonl")
methods = {"mtt": "MTT", "datm_cpd_dae": "DATM+CPD+DAE"}
protocol = []
for key, label in methods.items():
    metrics, evaluation = load(f"{key}-metrics.json"), load(f"{key}-eval.json")
    protocol.append({
        "method": label,
        "accuracy_mean": evaluation["mean"] if evaluation else None,
        "accuracy_std": evaluation["std"] if evaluation else None,
        "accuracies": evaluation["runs"] if evaluation else None,
        "seconds_per_iteration": metrics["seconds_per_iteration"] if metrics else None,
        "final_lr": metrics["final_lr"] if metrics else None,
        "distill_seconds": next((s.get("seconds") for s in steps if s["step"] == f"distill-{key}"), None),
        "eval_seconds": next((s.get("seconds") for s in steps if s["step"] == f"eval-{key}"), None),
    })
def step_seconds(name):
    return next((s.get("seconds") for s in steps if s["step"] == name), None)


compiled_eval = load("mtt-eval-compiled.json", work)
eager_eval = load("mtt-eval.json")
compiled_row = [{"training": label, "accuracy_mean": e["mean"] if e else None, "accuracy_std": e["std"] if e else None,
                 "accuracies": e["runs"] if e else None, "seconds": step_seconds(name)}
                for label, e, name in (("eager", eager_eval, "eval-mtt"), ("compiled", compiled_eval, "eval-mtt-compiled"))]
dc_eval = load("dc-eval.json", work)
dc_metrics = load("dc/metrics.json", work)
gradient_matching = {"method": "DC with siamese DSA (examples/dc), Fashion-MNIST IPC 1, width 128",
                     "published": "70.6 ± 0.6 (DSA; DC without augmentation 70.5 ± 0.6)",
                     "accuracy_mean": dc_eval["mean"] if dc_eval else None, "accuracy_std": dc_eval["std"] if dc_eval else None,
                     "accuracies": dc_eval["runs"] if dc_eval else None,
                     "seconds_per_iteration": dc_metrics["seconds_per_iteration"] if dc_metrics else None,
                     "distill_seconds": step_seconds("distill-dc"), "eval_seconds": step_seconds("eval-dc")}
env = {k: speed[0][k] for k in ("device", "torch", "kornia", "ddtoolbox", "python", "date") if k in speed[0]} if speed else {}
summary = {"dry_run": dry, "device_asked": device, "environment": env, "total_seconds": seconds, "steps": steps,
           "speed": speed, "protocol": protocol, "compiled_evaluation": compiled_row,
           "gradient_matching": gradient_matching,
           "yardstick": {"what": "reference MTT on the same budget (one H100)", "accuracy": "85.38 ± 0.30",
                         "initial_real_images": "75.25 ± 0.40", "ms_per_iteration": "275-300",
                         "experts_seconds": 139}}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

md = ["# GPU run: speed rows and the budget-matched Fashion-MNIST IPC 10 protocol", ""]
if dry:
    md += ["**Dry run on the CPU with tiny sizes: the numbers below only show that the script works.**", ""]
md += [f"Device: {env.get('device', device)}; torch {env.get('torch', '?')}, kornia {env.get('kornia', '?')}, "
       f"ddtoolbox {env.get('ddtoolbox', '?')}; {seconds} s in all.", "", "## Speed (one distillation iteration)", "",
       "| shape | model | IPC | steps | unroll | ms / iteration | peak MiB | GFLOP/s |", "|---|---|---|---|---|---|---|---|"]
for r in speed:
    md.append(f"| {r['channels']}x{r['size']}x{r['size']} | {r['model']} | {r['ipc']} | {r['syn_steps']} | {r['mode']} | "
              f"{r['seconds_per_iteration'] * 1000:.1f} | {r['peak_memory_bytes'] / 2**20:.0f} | "
              f"{r['achieved_tflops'] * 1000:.1f} |")
md += ["", "## Budget-matched protocol (Fashion-MNIST, IPC 10, 500 iterations, 5 networks x 1000 epochs)", "",
       "| method | accuracy (%) | ms / iteration | distill s | eval s |", "|---|---|---|---|---|"]
for p in protocol:
    acc = f"{p['accuracy_mean'] * 100:.2f} ± {p['accuracy_std'] * 100:.2f}" if p["accuracy_mean"] is not None else "-"
    ms = f"{p['seconds_per_iteration'] * 1000:.0f}" if p["seconds_per_iteration"] is not None else "-"
    md.append(f"| {p['method']} | {acc} | {ms} | {p['distill_seconds'] or '-'} | {p['eval_seconds'] or '-'} |")
md += ["| reference MTT, same budget (H100) | 85.38 ± 0.30 | 275-300 | - | - |", "",
       "## Evaluation of the MTT set, eager and --compile (end to end, compiling included, cold cache)", "",
       "| training | accuracy (%) | eval s |", "|---|---|---|"]
for c in compiled_row:
    acc = f"{c['accuracy_mean'] * 100:.2f} ± {c['accuracy_std'] * 100:.2f}" if c["accuracy_mean"] is not None else "-"
    md.append(f"| {c['training']} | {acc} | {c['seconds'] or '-'} |")
g = gradient_matching
acc = f"{g['accuracy_mean'] * 100:.2f} ± {g['accuracy_std'] * 100:.2f}" if g["accuracy_mean"] is not None else "-"
ms = f"{g['seconds_per_iteration'] * 1000:.0f}" if g["seconds_per_iteration"] is not None else "-"
md += ["", "## Gradient matching (DC with siamese DSA), Fashion-MNIST IPC 1, 1000 iterations, 5 networks x 1000 epochs",
       "", "| accuracy (%) | published (DSA) | ms / iteration | distill s | eval s |", "|---|---|---|---|---|",
       f"| {acc} | 70.6 ± 0.6 | {ms} | {g['distill_seconds'] or '-'} | {g['eval_seconds'] or '-'} |"]
md += ["", "## Steps", ""] + [f"- {s['step']}: {s['status']}" + (f" ({s['seconds']} s)" if "seconds" in s else "")
                          for s in steps]
(out / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
exit $FAILED
