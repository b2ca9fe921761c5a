// kernel_set.hpp: the kernel tables linear() dispatches through, and where they are compiled.
//
// By default the tables (every Isa's kernels) are inline and compile in each translation unit
// that calls linear(). A program with many such units can compile them once instead: define
// LOWBIT_SEPARATE_KERNELS in every unit and link one unit that defines the tables (CMake:
// link lowbit::kernels, which does both; by hand: compile src/kernels.cpp with the macro
// defined). Only that unit may include gemm/dispatch.hpp or gemm/block_dispatch.hpp, which define
// the tables. The results are the same bits either way; only where the code compiles changes.
#pragma once

#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/block_layout.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/packed_weights.hpp>

/// How a kernel table is defined: inline in the headers, or once with external linkage.
#ifdef LOWBIT_SEPARATE_KERNELS
#define LOWBIT_KERNEL_TABLE
#else
#define LOWBIT_KERNEL_TABLE inline
#endif

namespace lowbit::detail {

/// The kernels one Isa provides; all compute exactly what kernels::reference defines.
struct KernelSet {
  void (*quantize)(const float* x, Index M, Index K, Index ldx, const PackedWeights& w,
                   ActivationQuant mode, QuantizedActivations& a);
  void (*linear_int)(const QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy,
                     Index n0, Index n1) noexcept;
  void (*linear_f32)(const float* x, Index M, Index ldx, const PackedWeights& w, float* y, Index ldy,
                     Index n0, Index n1) noexcept;
};

/// The block-form kernels one Isa provides; all compute exactly what kernels::reference's
/// linear_block_int / linear_block_f32 define.
struct BlockKernelSet {
  void (*linear_int)(const QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy, Index n0,
                     Index n1) noexcept;
  void (*linear_f32)(const float* x, Index M, Index ldx, const float* xs, const PackedWeights& w, float* y,
                     Index ldy, Index n0, Index n1) noexcept;
};

#ifdef LOWBIT_SEPARATE_KERNELS
// Defined in gemm/dispatch.hpp and gemm/block_dispatch.hpp, compiled once (src/kernels.cpp).
KernelSet kernel_set(cpu::Isa isa);
BlockKernelSet block_kernel_set(cpu::Isa isa);
BlockKernelSet block_kernel_set(cpu::Isa isa, const BlockLayout& L);
#endif

}  // namespace lowbit::detail
