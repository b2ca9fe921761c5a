#!/usr/bin/env bash
# bench-quantize.sh: lowbit-quantize at full scale. Makes a synthetic llama GGUF in F16 with
# TinyLlama-1.1B's shapes (22 layers, width 2048, FFN 5632, 32/4 heads, vocab 32000; random
# weights, stories260K's tokenizer) under build/quantize-1b, then quantizes it with `--type Q4_K
# --method gptq` and with `--bpw 4.5`, each with 2 threads, calibrated on ../shared's text. Each
# run prints its wall time and peak anonymous memory (RssAnon) and the load average.
# Needs about 3.5 GB of disk there. Builds the two programs for this machine (-march=native, as a
# user quantizing a large model would; Eigen's float GEMMs of the calibration then use its widest
# vectors) in a tree of their own, build/native.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-march=native \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_EXAMPLES=ON \
  -DLOWBIT_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/native -j "$(nproc)" --target lowbit-quantize synthetic-llama

bin=build/native/examples/lowbit_quantize
tokenizer=../shared/models/stories260K.gguf
text=../shared/data/tinystories_val.txt
[ -f "$tokenizer" ] && [ -f "$text" ] || { echo "bench-quantize: needs $tokenizer and $text" >&2; exit 1; }
out=build/quantize-1b
mkdir -p "$out"
model=$out/synthetic-1.1B-F16.gguf
[ -f "$model" ] || "$bin/synthetic-llama" --out "$model" --tokenizer-from "$tokenizer"

run() {
  local name=$1
  shift
  echo "== lowbit-quantize $* --threads 2"
  "$bin/lowbit-quantize" -q --model "$model" --calib "$text" --out "$out/synthetic-1.1B-$name.gguf" \
    --threads 2 --report "$out/synthetic-1.1B-$name.json" "$@" |
    grep -E "^(method|quantized|file|time)"
}
run Q4_K-gptq --type Q4_K --method gptq
run bpw4.5 --bpw 4.5
