#!/usr/bin/env bash
# The main job on the embedded default data (scikit-learn's bundled digits, no download):
# train an EfficientAttention-fused ResNet-style model and report its test accuracy.
set -euo pipefail
out=${1:-demo-out}
bin=$(dirname "$0")/../.venv/bin
mkdir -p "$out"
"$bin/edgefuse" train --model resnet --fusion effatt --data digits --epochs 15 --out "$out/model.pt" --force
"$bin/edgefuse" inspect "$out/model.pt"
