#!/usr/bin/env bash
# setup.sh: installs the Debian 12 packages lowbit's build, tests, examples and benchmarks use,
# including what Debian's own CMake package configs pull in. Installs only what is missing; needs
# root (or sudo) when something is. Extra package names given as arguments are installed too.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  ccache                              # the demo's and the tests' trees share their compiles
  libeigen3-dev libfmt-dev            # the library
  catch2                              # tests
  libcli11-dev nlohmann-json3-dev gnuplot-nox  # examples
  libbenchmark-dev                    # benchmarks
  libdnnl-dev                         # benchmarks: oneDNN, the int8 peer (optional in CMake)
  ocl-icd-opencl-dev                  # ... whose dnnl-config.cmake requires OpenCL (a Recommends)
  g++-aarch64-linux-gnu qemu-user     # tests: NEON kernels cross-built and run under qemu
  clang-14 libclang-rt-14-dev         # tests: the sanitizer build and the GGUF reader's libFuzzer
  libomp-14-dev                       # ... whose OpenMP is LLVM's
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "setup: missing packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
