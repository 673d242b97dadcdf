#!/usr/bin/env bash
# The GPU check of the paper's presets, in one go (a lent GPU is there for minutes): the CIFAR-10 preset's local step,
# global step and rehearsal sampling in bf16, eager and optimized (--compile --channels_last --adam_fused), then in
# fp32, and the ImageNet-100 preset's in bf16, each with images/s, the fraction of the GPU's bf16 peak, peak
# memory and the projection of the preset's whole schedule in GPU-hours.
# Everything lands in benchmarks/results/speed_cifar_cuda.json (with the GPU's name), each piece as it finishes.
#
#   bash benchmarks/gpu_check.sh                 # on a CUDA machine, under 10 minutes on an H100-class GPU
#   DEVICE=cpu BATCH=4 STEPS=1 TIMEOUT_SCALE=4 bash benchmarks/gpu_check.sh   # the same path on a CPU, to check it
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
OUTPUT="${OUTPUT:-benchmarks/results/speed_cifar_cuda.json}"
PIECES="$(mktemp -d)"
common=(--device "$DEVICE" --warmup "${WARMUP:-3}" --steps "${STEPS:-10}" --sampling_steps "${SAMPLING_STEPS:-20}")
[[ -n "${BATCH:-}" ]] && common+=(--train_batch_size "$BATCH" --sampling_batch_size "$BATCH")

run() {  # SECONDS NAME PRESET NUM_CLASSES PRECISION [SPEED FLAGS...]: at most 600 s in all, the device's limit
  local seconds="$1"; shift
  timeout "$(( seconds * ${TIMEOUT_SCALE:-1} ))" python benchmarks/stage_speed.py --preset "$2" --num_classes "$3" \
    --mixed_precision "$4" "${common[@]}" "${@:5}" --output "$PIECES/$1.json" || echo "$1 did not finish" >&2
  python - "$PIECES" "$OUTPUT" <<'PY'
import json, sys
from pathlib import Path
pieces, output = Path(sys.argv[1]), Path(sys.argv[2])
report = {path.stem: json.loads(path.read_text()) for path in sorted(pieces.glob("*.json"))}
output.parent.mkdir(parents=True, exist_ok=True)
output.write_text(json.dumps(report, indent=2) + "\n")
PY
}

optimized=(--compile --channels_last --adam_fused)
# Compilation (about a minute a graph) takes most of the optimized piece's time.
run 120 cifar10_bf16 examples/configs/cifar10.yaml 10 bf16
run 300 cifar10_bf16_optimized examples/configs/cifar10.yaml 10 bf16 "${optimized[@]}"
run 90 cifar10_fp32 examples/configs/cifar10.yaml 10 no
run 90 imagenet100_bf16 examples/configs/imagenet100.yaml 100 bf16
echo "saved $OUTPUT"
