#!/usr/bin/env bash
# test.sh: installs what is missing, builds and runs the whole test suite in Release, then again
# in a Debug build under AddressSanitizer + UndefinedBehaviorSanitizer. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/setup.sh

echo "== Release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_BENCHMARKS=ON
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs"

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
  -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san"
cmake --build build/sanitize -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/sanitize --output-on-failure -j "$jobs" -E '^package_'

echo "== libFuzzer: GGUF reader (clang++-14, 50 s)"
mkdir -p build/fuzz/corpus
clang++-14 -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude -I/usr/include/eigen3 tests/fuzz/fuzz_gguf.cpp -lfmt -o build/fuzz/fuzz_gguf
build/fuzz/fuzz_gguf -max_total_time=50 -rss_limit_mb=1024 -malloc_limit_mb=256 \
  build/fuzz/corpus tests/fuzz/seeds

echo "test.sh: all tests passed"
