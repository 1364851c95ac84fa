#!/usr/bin/env bash
# EDF's Figure 1b on real photos: Grad-CAM statistics (mean activation, share of pixels >= 0.5) of
# CIFAR-10 and Imagenette, each measured with a network of one architecture trained on that dataset.
#
#   DATA=/path/to/prepared OUT=/tmp/fig1b benchmarks/edf-real/fig1b.sh
#
# DATA holds stores from 'ddtool data prepare': DATA/cifar10 (CIFAR-10, 32 px), DATA/in32/imagenette
# and DATA/in64/imagenette (Imagenette squashed to 32 and 64 px). The networks: ConvNet width 64
# (3 blocks at 32 px, 4 at 64 px), SGD lr 0.01, batch 256, DSA, trained for about the same number of
# steps on each at 32 px (CIFAR-10 8 epochs of 50,000 images; Imagenette 40 epochs of 9,469); at 64 px
# Imagenette gets EPOCHS64 epochs (default 20, what a 2-core CPU affords; it runs last). Each buffer
# records its test accuracy per epoch (the curve). Grad-CAM at the last block, each image's true
# class, 1000 test images (100 per class). No image is written: only numbers and the histograms.
set -euo pipefail
DATA=${DATA:?set DATA to the folder of prepared stores}
OUT=${OUT:-/tmp/fig1b}
DDTOOL=${DDTOOL:-ddtool}
HERE=$(cd "$(dirname "$0")" && pwd)
THREADS=${THREADS:-2}
mkdir -p "$OUT"
common=(--device cpu --seed 0 --threads "$THREADS" --quiet)

train() {  # name dataset data-root epochs depth
    [ -f "$OUT/buf-$1/buffer.json" ] && return
    # --resume: an expert stopped mid-training continues from its last epoch
    /usr/bin/time -f "$1: %e s" $DDTOOL buffer --dataset "$2" --data-root "$3" --out "$OUT/buf-$1" --num-experts 1 \
        --epochs "$4" --width 64 --depth "$5" --resume "${common[@]}" 2>&1 | tail -2
}

stats() {  # name dataset data-root label [compare...]
    local name=$1 ds=$2 root=$3 label=$4; shift 4
    $DDTOOL compdd stats --dataset "$ds" --data-root "$root" --buffer "$OUT/buf-$name" --out "$HERE/fig1b/$name.json" \
        --label "$label" --max-images 1000 --examples 0 "${common[@]}" "$@"
}
mkdir -p "$HERE/fig1b"
PY=${PY:-python3}
curve() {  # name dataset data-root
    "$PY" "$HERE/expert_curve.py" "$OUT/buf-$1" --dataset "$2" --data-root "$3" --threads "$THREADS" \
        --json "$HERE/fig1b/$1-curve.json"
}
train cifar10 cifar10 "$DATA" 8 3
stats cifar10 cifar10 "$DATA" "CIFAR-10 (32 px)"
curve cifar10 cifar10 "$DATA"
train imagenette32 imagenette "$DATA/in32" 40 3
stats imagenette32 imagenette "$DATA/in32" "Imagenette (32 px)" \
    --compare "$HERE/fig1b/cifar10.json" --png "$HERE/fig1b/comparison-32px.png"
curve imagenette32 imagenette "$DATA/in32"
train imagenette64 imagenette "$DATA/in64" "${EPOCHS64:-20}" 4
stats imagenette64 imagenette "$DATA/in64" "Imagenette (64 px)" \
    --compare "$HERE/fig1b/cifar10.json" "$HERE/fig1b/imagenette32.json" --png "$HERE/fig1b/comparison.png"
curve imagenette64 imagenette "$DATA/in64"
