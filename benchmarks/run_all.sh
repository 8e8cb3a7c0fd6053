#!/usr/bin/env bash
# Runs every benchmark on the real IDRiD copy and prints the figures of the README table.
#   bash benchmarks/run_all.sh [IDRID_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/datasets/idrid-800}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2
echo "machine: $(nproc) cores, $(python -c 'import platform; print(platform.processor() or platform.machine())'), TensorFlow $(python -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)"
python benchmarks/build_tfrecords.py --data_dir="$DATA" --out_dir="$OUT/tfr" 2>/dev/null
python benchmarks/input_pipeline.py --records_dir="$OUT/tfr" --batches=60 2>/dev/null
python benchmarks/train_step.py --records_dir="$OUT/tfr" --steps=20 2>/dev/null
python benchmarks/inference.py 2>/dev/null
python benchmarks/train_memory.py --data_dir="$DATA" --run_dir="$OUT/run" 2>/dev/null
