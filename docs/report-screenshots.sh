#!/usr/bin/env bash
# Remake docs/report-screenshot.png and docs/report-comparison-screenshot.png: a small real
# Fashion-MNIST run and a small EDF ablation on the same buffer (about 15 minutes on 2 idle CPU cores),
# their reports, and screenshots of those taken in headless Chromium (tests/browser.py).
#
#   docs/report-screenshots.sh [WORK_DIR]      (default runs/report-screenshots)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-runs/report-screenshots}"
PY="${DDTOOL_VENV:-.venv}/bin/python"
DDTOOL="${DDTOOL_VENV:-.venv}/bin/ddtool"
COMMON=(--dataset fashion-mnist --device cpu --quiet)
NET=(--width 32)

[ -f "$WORK/buffer/buffer.json" ] || \
    "$DDTOOL" buffer "${COMMON[@]}" "${NET[@]}" --out "$WORK/buffer" --num-experts 2 --epochs 4 --train-subset 500
# IPC 1, 50 iterations, evaluated every 25 by 2 networks x 50 epochs, DAE measuring its area every 5
DISTILL=(--buffer "$WORK/buffer" --ipc 1 --expert-epochs 2 --max-start-epoch 2 --lr-img 1000
         --eval-runs 2 --eval-epochs 50 --snapshot-every 5 --dae-every 5)
[ -f "$WORK/mtt-dae/metrics.json" ] || \
    "$DDTOOL" distill "${COMMON[@]}" "${DISTILL[@]}" --out "$WORK/mtt-dae" --iterations 50 --eval-every 25 \
        --plugin dae
# the EDF ablation (DATM; neither, CPD, DAE, both), smaller: 20 iterations of 10 student steps
"$DDTOOL" edf-ablation "${COMMON[@]}" "${DISTILL[@]}" --out "$WORK/ablation" --iterations 20 --syn-steps 10 \
    --eval-every 10
"$PY" tests/browser.py "$WORK/mtt-dae/report.html" docs/report-screenshot.png
"$PY" tests/browser.py "$WORK/ablation/comparison.html" docs/report-comparison-screenshot.png
