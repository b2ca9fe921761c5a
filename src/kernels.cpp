// kernels.cpp: lowbit's kernel tables compiled once, for programs built with
// LOWBIT_SEPARATE_KERNELS (see lowbit/gemm/kernel_set.hpp; CMake: lowbit::kernels).
#ifndef LOWBIT_SEPARATE_KERNELS
#error "compile src/kernels.cpp with LOWBIT_SEPARATE_KERNELS defined, as every unit that links it"
#endif

#include <lowbit/gemm/block_dispatch.hpp>
#include <lowbit/gemm/dispatch.hpp>
