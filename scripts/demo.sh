#!/usr/bin/env bash
# demo.sh: installs what is missing, builds lowbit's examples in Release and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=OFF
cmake --build build/release -j "$(nproc)" --target quantize_weights
build/release/examples/quantize_weights "$@"
