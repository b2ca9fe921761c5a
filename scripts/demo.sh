#!/usr/bin/env bash
# demo.sh: installs what is missing, builds lowbit's examples in Release and runs the main demo:
# lowbit-quantize on the real stories260K Llama (../shared): uniform Q4_0 with GPTQ and a --bpw
# mix at the same bytes, both scored with the engine's perplexity beside FP32, then the PTQ vs
# QAT vs mixed-precision study, writing llama_study.{json,csv,png} to the current folder. Without the model it explains how to point
# the study at a llama GGUF and runs the synthetic weight-quantization demo instead.
# Extra arguments go to llama_study (e.g. --budgets 3.5 4 4.5 5 6 --qat-steps 80 for the full run).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

"$root/scripts/setup.sh"
# Its own build tree with every option it relies on spelled out (the tests use build/release).
build="$root/build/demo"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS= \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_EXAMPLES=ON \
  -DLOWBIT_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j "$(nproc)" --target demo_programs

model="$root/../shared/models/stories260K.gguf"
text="$root/../shared/data/tinystories_val.txt"
if [ -f "$model" ] && [ -f "$text" ]; then
  start=$SECONDS
  q4="$build/stories260K-Q4_0-gptq.gguf"
  mix="$build/stories260K-bpw-Q4_0.gguf"
  echo "== lowbit-quantize: uniform Q4_0 (GPTQ), then --bpw at the same bytes"
  "$build/examples/lowbit_quantize/lowbit-quantize" -q --model "$model" --calib "$text" --out "$q4" \
    --type Q4_0 --method gptq | grep -E "^(method|quantized|file|time)"
  "$build/examples/lowbit_quantize/lowbit-quantize" -q --model "$model" --calib "$text" --out "$mix" \
    --bpw Q4_0 | grep -E "^(method|quantized|file|time)"
  echo "== perplexity, evaluation half of the text (20,035 predictions), weight-only"
  printf '%-34s %10s %9s\n' file bytes PPL
  for f in "$model" "$q4" "$mix"; do
    ppl=$("$build/examples/llama/llama_run" --model "$f" --text "$text" --activations float32 |
          sed -n 's/.* PPL \([0-9.]*\).*/\1/p' | tail -n 1)
    printf '%-34s %10s %9s\n' "$(basename "$f")" "$(stat -c %s "$f")" "$ppl"
  done
  echo "   (run either file with llama.cpp: llama-cli -m $q4)"
  echo "== quantize + evaluate: $((SECONDS - start)) s"
  "$build/examples/llama_study/llama_study" --quick --model "$model" --text "$text" \
    --json llama_study.json --csv llama_study.csv --plot llama_study.png "$@"
  echo "== demo work (quantize, evaluate, study; the build excluded): $((SECONDS - start)) s"
else
  echo "demo: $model not found."
  echo "  Run the study on any llama GGUF (F32/F16/BF16/Q8_0/Q4_0) and a plain-text file:"
  echo "  build/demo/examples/llama_study/llama_study --model M.gguf --text T.txt --ctx N"
  echo "  Meanwhile, the synthetic demo: an LLM-shaped weight matrix at INT8/INT4/INT2."
  "$build/examples/quantize_weights"
fi
