#!/usr/bin/env bash
# test.sh: installs what is missing, then builds, from one pool of jobs, the whole test suite in
# Release (GCC) and in a Debug build under AddressSanitizer + UndefinedBehaviorSanitizer (Clang),
# the GGUF reader's fuzzer and the gemm tests cross-built for AArch64; runs them all (the AArch64
# ones under qemu). Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# One OpenMP thread per test process: ctest already runs $jobs tests at once, and oversubscribed
# OpenMP spin-waits are slow. Tests that check thread-count independence set their own counts.
export OMP_NUM_THREADS=1

scripts/setup.sh

# Release (GCC) and sanitizer (Clang) trees. ccache: the examples scripts/demo.sh built (same
# flags, its own tree) are not compiled again. Clang compiles lowbit's template-heavy tests with the
# sanitizers in under half GCC's time, and builds every test with a second compiler (warnings are
# errors there too). Line tables give the reports their file:line at less cost than full debug
# information.
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS= \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_EXAMPLES=ON \
  -DLOWBIT_BUILD_BENCHMARKS=ON
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cmake -S . -B build/sanitize-clang -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-gline-tables-only -O1" -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" \
  -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_BUILD_BENCHMARKS=OFF

echo "== Builds: Release, sanitizers, fuzzer, AArch64 (one pool of $jobs jobs)"
make -j "$jobs" -O --no-print-directory -f scripts/test-builds.mk

echo "== Release tests"
ctest --test-dir build/release --output-on-failure --no-tests=error -j "$jobs"
if grep -qw amx_int8 /proc/cpuinfo; then
  echo "== AMX machine: the kernel tests must run the amx Isa on the real tiles"
  LOWBIT_REQUIRE_ISAS=amx build/release/tests/test_gemm
fi

echo "== AddressSanitizer + UndefinedBehaviorSanitizer tests (Clang)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/sanitize-clang --output-on-failure --no-tests=error -j "$jobs" -E '^package_'

# The fuzzer and the two qemu runs are one process each: all three at once, each into its own log,
# printed whole when it ends (one after another there, so each log stays readable).
echo "== libFuzzer on the GGUF reader (clang++-14, 50 s) beside the AArch64 gemm tests (NEON, dotprod) under qemu-user"
mkdir -p build/fuzz/corpus
arm=build/aarch64
build/fuzz/fuzz_gguf -max_total_time=50 -rss_limit_mb=1024 -malloc_limit_mb=256 \
  build/fuzz/corpus tests/fuzz/seeds >build/fuzz/fuzz.log 2>&1 &
fuzz=$!
# -cpu max has dotprod; cortex-a53 has not, so dispatch must fall back to neon.
LOWBIT_REQUIRE_ISAS=neon,neon_dotprod qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max "$arm/test_gemm" \
  >"$arm/dotprod.log" 2>&1 &
dotprod=$!
LOWBIT_REQUIRE_ISAS=neon qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a53 "$arm/test_gemm" \
  >"$arm/neon.log" 2>&1 &
neon=$!
trap 'kill "$fuzz" "$dotprod" "$neon" 2>/dev/null || true' EXIT  # none outlives an interrupted run
failed=()
for run in "fuzz:$fuzz:build/fuzz/fuzz.log" "qemu -cpu max:$dotprod:$arm/dotprod.log" \
           "qemu -cpu cortex-a53:$neon:$arm/neon.log"; do
  IFS=: read -r name pid log <<<"$run"
  rc=0
  wait "$pid" || rc=$?
  echo "-- $name (exit $rc):"
  cat "$log"
  [ "$rc" -eq 0 ] || failed+=("$name")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "test.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi

echo "test.sh: all tests passed"
