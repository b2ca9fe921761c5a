# test-builds.mk: every build scripts/test.sh runs, from one pool of jobs (make -j N -f this file,
# from the repository root, after test.sh has configured both CMake trees): the Release tree, the
# sanitizer tree, the GGUF reader's fuzzer and the AArch64 gemm tests. One jobserver for all keeps
# every core busy to the end; one tree at a time left a core idle behind each tree's last unit.
.RECIPEPREFIX := >
.PHONY: all release sanitize fuzz aarch64 release-first sanitize-first
all: sanitize release aarch64 fuzz

# The largest units of each tree first, so that the pool ends on small ones (CMake's Makefiles
# would start test_llama and test_gemm last and leave a core idle behind them): the three test
# programs that link the kernel tables, then the rest; one make at a time per tree.
first := test_llama test_gemm test_readme
release: release-first
> +$(MAKE) -C build/release
release-first:
> +$(MAKE) -C build/release $(first)
sanitize: sanitize-first
> +$(MAKE) -C build/sanitize-clang
sanitize-first:
> +$(MAKE) -C build/sanitize-clang $(first)

fuzz:
> mkdir -p build/fuzz
> clang++-14 -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
>   -Iinclude -I/usr/include/eigen3 tests/fuzz/fuzz_gguf.cpp -lfmt -o build/fuzz/fuzz_gguf

# Debian's libfmt is an x86 library, so the cross build uses fmt header-only; Eigen and Catch2 are
# header-only too. The gemm tests are one translation unit, as CMake builds them on the host (the
# library's templates are instantiated once), beside the Catch2 main.
arm := build/aarch64
arm_cxx := aarch64-linux-gnu-g++ -std=c++17 -O2 -Wall -Wextra -Wpedantic -Werror -Wno-psabi -fopenmp \
  -Iinclude -I/usr/include/eigen3 -DFMT_HEADER_ONLY
aarch64: $(arm)/catch_main.o $(arm)/test_gemm.o
> aarch64-linux-gnu-g++ -fopenmp $^ -o $(arm)/test_gemm
$(arm)/catch_main.o: FORCE
> mkdir -p $(arm)
> $(arm_cxx) -c tests/catch_main.cpp -o $@
$(arm)/test_gemm.o: FORCE
> mkdir -p $(arm)
> printf '#include "%s"\n' $(abspath $(wildcard tests/gemm/test_gemm_*.cpp)) >$(arm)/test_gemm_unity.cpp
> $(arm_cxx) -c $(arm)/test_gemm_unity.cpp -o $@
FORCE:
