#!/usr/bin/env bash
# Runs every benchmark on the real IDRiD copy and prints the figures of the README table.
#   bash benchmarks/run_all.sh [IDRID_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/datasets/idrid-800}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs || uname -m)"
if grep -qw avx512f /proc/cpuinfo; then avx=AVX-512; elif grep -qw avx2 /proc/cpuinfo; then avx='AVX2, no AVX-512'; else avx='no AVX2'; fi
echo "machine: $(nproc) cores, ${cpu:-$(uname -m)} ($avx), TensorFlow $(python -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)"
# Runs one benchmark script and says how long it took, so a slow machine shows where.
run() {
  local start=$SECONDS
  python "$@"
  echo "  [$1: $((SECONDS - start)) s]"
}
run benchmarks/build_tfrecords.py --data_dir="$DATA" --out_dir="$OUT/tfr" 2>/dev/null
run benchmarks/input_pipeline.py --records_dir="$OUT/tfr" --batches=60 2>/dev/null
run benchmarks/train_step.py --settings=default:16,default:32 --steps=10 2>/dev/null
run benchmarks/train_step.py --gin_file=configs/idrid_binary.gin --settings=default:32,bf16:32,xla:32 \
    --records_dir="$OUT/tfr" --epoch_batch=32 --epoch_modes=default --epoch_rounds=5 --epochs=4 --steps=10 2>/dev/null
run benchmarks/inference.py 2>/dev/null
run benchmarks/train_memory.py --data_dir="$DATA" --run_dir="$OUT/run" 2>/dev/null
echo "all benchmarks: $((SECONDS / 60)) min $((SECONDS % 60)) s"
