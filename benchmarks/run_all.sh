#!/usr/bin/env bash
# Runs every benchmark on the real IDRiD copy and prints the figures of the README table,
# in under 5 minutes on the 2-core AVX-512 VM of the README's "Speed" (about 4 on a half-speed
# day; 13 to 14 minutes on a 2-core AVX2 VM, see the README).
#   bash benchmarks/run_all.sh [IDRID_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/datasets/idrid-800}"
if [ ! -d "$DATA" ]; then
  echo "run_all.sh: IDRiD folder not found: $DATA (give its path as the first argument)" >&2
  exit 2
fi
tf_version="$(python -c 'import absl, tensorflow as tf; print(tf.__version__)' 2>/dev/null)" || {
  echo "run_all.sh: '$(command -v python || echo python)' cannot import tensorflow and absl;" \
    "activate the project's environment first (. .venv/bin/activate)" >&2
  exit 2
}
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
export TF_CPP_MIN_LOG_LEVEL=2
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs || uname -m)"
if grep -qw avx512f /proc/cpuinfo; then avx=AVX-512; elif grep -qw avx2 /proc/cpuinfo; then avx='AVX2, no AVX-512'; else avx='no AVX2'; fi
echo "machine: $(nproc) cores, ${cpu:-$(uname -m)} ($avx), TensorFlow $tf_version"
# Runs one benchmark script, then prints its label and seconds, so a slow machine shows
# where the time went. Its stderr (TensorFlow's start-up chatter) is kept aside and shown
# only if the script fails, which stops the whole run.
run() {
  local label=$1 start=$SECONDS status=0
  shift
  python "$@" 2>"$OUT/stderr" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "run_all.sh: $label ($1) failed with exit $status; the end of its stderr:" >&2
    tail -n 15 "$OUT/stderr" >&2
    exit "$status"
  fi
  echo "  [$label, $1: $((SECONDS - start)) s]"
}
run 'TFRecord build' benchmarks/build_tfrecords.py --data_dir="$DATA" --out_dir="$OUT/tfr"
run 'input pipeline' benchmarks/input_pipeline.py --records_dir="$OUT/tfr" --batches=60
run 'default model' benchmarks/train_step.py --settings=default:16,default:32 --steps=10
# Mixed bfloat16 is timed only on a CPU that computes bfloat16 natively (AVX512_BF16 or
# AMX). Elsewhere it is emulated and several times slower than float32 (14.6 against 53
# images/s on a 2-core AVX2 EPYC), and its three rounds alone took minutes.
settings=default:32,xla:32
if grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo 2>/dev/null; then
  settings=default:32,bf16:32,xla:32
else
  echo "  (mixed bfloat16 not timed: this CPU has no native bfloat16, AVX512_BF16 or AMX)"
fi
run 'IDRiD model' benchmarks/train_step.py --gin_file=configs/idrid_binary.gin \
    --settings="$settings" --records_dir="$OUT/tfr" --epoch_batch=32 \
    --epoch_modes=default --epoch_rounds=5 --epochs=4 --steps=10
run 'inference' benchmarks/inference.py
run 'training memory' benchmarks/train_memory.py --data_dir="$DATA" --run_dir="$OUT/run"
echo "all benchmarks: $((SECONDS / 60)) min $((SECONDS % 60)) s"
