// block_dispatch.hpp: the block-form (GGUF-style) kernels of each Isa, chosen at run time.
#pragma once

#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/kernel_set.hpp>
#include <lowbit/gemm/kernels_amx.hpp>
#include <lowbit/gemm/kernels_avx2.hpp>
#include <lowbit/gemm/kernels_avx512.hpp>
#include <lowbit/gemm/kernels_neon.hpp>
#include <lowbit/gemm/kernels_scalar.hpp>
#include <lowbit/gemm/packed_weights.hpp>

namespace lowbit::detail {

LOWBIT_KERNEL_TABLE BlockKernelSet block_kernel_set(cpu::Isa isa) {
  switch (isa) {
#if defined(LOWBIT_X86)
    // Isa::amx: integer activations on tiles for prefill (M >= 16; kernels::amx::linear_block_int
    // falls back to AVX-512 VNNI's block kernels otherwise, and amx implies avx512_vnni, see
    // cpu.hpp); float32 activations (weight-only) run AVX-512 VNNI's.
    case cpu::Isa::amx:
      return {kernels::amx::linear_block_int, kernels::avx512_vnni::linear_block_f32};
    case cpu::Isa::avx512_vnni:
      return {kernels::avx512_vnni::linear_block_int, kernels::avx512_vnni::linear_block_f32};
    case cpu::Isa::avx2:
      return {kernels::avx2::linear_block_int, kernels::avx2::linear_block_f32};
#elif defined(LOWBIT_AARCH64)
    case cpu::Isa::neon_dotprod:
      return {kernels::neon_dotprod::linear_block_int, kernels::neon_dotprod::linear_block_f32};
    case cpu::Isa::neon:
      return {kernels::neon::linear_block_int, kernels::neon::linear_block_f32};
#endif
    case cpu::Isa::scalar:
      return {kernels::scalar::linear_block_int, kernels::scalar::linear_block_f32};
    default:
      break;
  }
  // An Isa without block kernels of its own (a tile-only path) runs the best vector path this CPU has.
  for (cpu::Isa v : {cpu::Isa::avx512_vnni, cpu::Isa::avx2, cpu::Isa::neon_dotprod, cpu::Isa::neon})
    if (v != isa && cpu::is_supported(v)) return block_kernel_set(v);
  return {kernels::scalar::linear_block_int, kernels::scalar::linear_block_f32};
}

/// The kernels for `isa` and weights of layout L. The vector integer kernels are compiled for
/// the configurations of GGUF's formats (see blk::run_int_config); weights of any other
/// configuration run the portable integer kernel (the same bits, slower).
LOWBIT_KERNEL_TABLE BlockKernelSet block_kernel_set(cpu::Isa isa, const BlockLayout& L) {
  BlockKernelSet k = block_kernel_set(isa);
  bool covered = true;
#if defined(LOWBIT_X86)
  if (k.linear_int == kernels::avx512_vnni::linear_block_int) covered = kernels::avx512_vnni::block_int_covers(L);
  if (k.linear_int == kernels::avx2::linear_block_int) covered = kernels::avx2::block_int_covers(L);
#elif defined(LOWBIT_AARCH64)
  if (k.linear_int == kernels::neon_dotprod::linear_block_int) covered = kernels::neon_dotprod::block_int_covers(L);
  if (k.linear_int == kernels::neon::linear_block_int) covered = kernels::neon::block_int_covers(L);
#endif
  if (!covered) k.linear_int = kernels::scalar::linear_block_int;
  return k;
}

}  // namespace lowbit::detail
