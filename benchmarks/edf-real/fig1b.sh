#!/usr/bin/env bash
# EDF's Figure 1b on real photos: Grad-CAM statistics (mean activation, share of pixels >= 0.5) of
# CIFAR-10 and Imagenette, each measured with a network of one architecture trained on that dataset.
#
#   DATA=/path/to/prepared OUT=/tmp/fig1b benchmarks/edf-real/fig1b.sh
#
# DATA holds stores from 'ddtool data prepare': DATA/cifar10 (CIFAR-10, 32 px), DATA/in32/imagenette
# and DATA/in64/imagenette (Imagenette squashed to 32 and 64 px). The networks: ConvNet width 64
# (3 blocks at 32 px, 4 at 64 px), SGD lr 0.01, batch 256, DSA, trained for about the same number of
# steps on each (CIFAR-10 8 epochs of 50,000 images; Imagenette 40 epochs of 9,469). Each buffer
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
    /usr/bin/time -f "$1: %e s" $DDTOOL buffer --dataset "$2" --data-root "$3" --out "$OUT/buf-$1" --num-experts 1 \
        --epochs "$4" --width 64 --depth "$5" "${common[@]}" 2>&1 | tail -2
}
train cifar10 cifar10 "$DATA" 8 3
train imagenette32 imagenette "$DATA/in32" 40 3
train imagenette64 imagenette "$DATA/in64" 40 4

stats() {  # name dataset data-root label [compare...]
    local name=$1 ds=$2 root=$3 label=$4; shift 4
    $DDTOOL compdd stats --dataset "$ds" --data-root "$root" --buffer "$OUT/buf-$name" --out "$HERE/fig1b/$name.json" \
        --label "$label" --max-images 1000 --examples 0 "${common[@]}" "$@"
}
mkdir -p "$HERE/fig1b"
stats cifar10 cifar10 "$DATA" "CIFAR-10 (32 px)"
stats imagenette32 imagenette "$DATA/in32" "Imagenette (32 px)"
stats imagenette64 imagenette "$DATA/in64" "Imagenette (64 px)" \
    --compare "$HERE/fig1b/cifar10.json" "$HERE/fig1b/imagenette32.json" --png "$HERE/fig1b/comparison.png"
PY=${PY:-python3}
"$PY" "$HERE/expert_curve.py" "$OUT/buf-cifar10" --dataset cifar10 --data-root "$DATA" --threads "$THREADS" \
    --json "$HERE/fig1b/cifar10-curve.json"
for s in 32 64; do
    "$PY" "$HERE/expert_curve.py" "$OUT/buf-imagenette$s" --dataset imagenette --data-root "$DATA/in$s" \
        --threads "$THREADS" --json "$HERE/fig1b/imagenette$s-curve.json"
done
