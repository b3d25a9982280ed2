#!/usr/bin/env bash
# The main job on the embedded default data (scikit-learn's bundled digits, no download):
# train an EfficientAttention-fused ResNet-style model, quantize it to int8 (torchao PT2E),
# export ONNX, ONNX Runtime Mobile (.ort), ExecuTorch (.pte) and TorchScript, validate fp32 vs int8 of
# every format in its own runtime with a CI-style gate, then classify a digit from the .pte the way an app does.
set -euo pipefail
out=${1:-demo-out}
bin=$(dirname "$0")/../.venv/bin
mkdir -p "$out"
"$bin/edgefuse" train --model resnet --fusion effatt --data digits --epochs 15 --out "$out/model.pt" --force
"$bin/edgefuse" inspect "$out/model.pt"
# Gate: int8 may lose at most 0.5 pp of top-1 and must not be slower than fp32 (default --max-latency-ratio 1.0).
"$bin/edgefuse" export "$out/model.pt" --int8 --calib digits --out "$out/build" --max-drop 0.5 --force \
    --format onnx,ort,pte,torchscript
"$bin/python" "$(dirname "$0")/run_artifact.py" "$out/build/model.int8.pte"
