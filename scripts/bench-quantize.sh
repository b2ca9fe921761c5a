#!/usr/bin/env bash
# bench-quantize.sh: lowbit-quantize at full scale. Makes a synthetic llama GGUF in F16 with
# TinyLlama-1.1B's shapes (22 layers, width 2048, FFN 5632, 32/4 heads, vocab 32000; random
# weights, stories260K's tokenizer) under build/quantize-1b, then quantizes it with `--type Q4_K
# --method gptq` and with `--bpw 4.5`, each with 2 threads, calibrated on ../shared's text. Each
# run prints its wall time and peak anonymous memory (RssAnon) and the load average.
# Needs about 3.5 GB of disk there. Builds in build/release, configured as scripts/test.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS= \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_EXAMPLES=ON \
  -DLOWBIT_BUILD_BENCHMARKS=ON >/dev/null
cmake --build build/release -j "$(nproc)" --target lowbit-quantize synthetic-llama

bin=build/release/examples/lowbit_quantize
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
