// block_dispatch.hpp: the block-form (GGUF-style) kernels of each Isa, chosen at run time.
#pragma once

#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/kernels_avx2.hpp>
#include <lowbit/gemm/kernels_avx512.hpp>
#include <lowbit/gemm/kernels_neon.hpp>
#include <lowbit/gemm/kernels_scalar.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <vector>

namespace lowbit::detail {

/// The block-form kernels one Isa provides; all compute exactly what kernels::reference's
/// linear_block_int / linear_block_f32 define.
struct BlockKernelSet {
  void (*linear_int)(const QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy, Index n0,
                     Index n1) noexcept;
  void (*linear_f32)(const float* x, Index M, Index ldx, const float* xs, const PackedWeights& w, float* y,
                     Index ldy, Index n0, Index n1) noexcept;
};

inline BlockKernelSet block_kernel_set(cpu::Isa isa) {
  switch (isa) {
#if defined(LOWBIT_X86)
    // AMX tiles run lowbit's own 8-bit and 4-bit layouts only; under Isa::amx block-form
    // weights run AVX-512 VNNI's block kernels (amx implies avx512_vnni, see cpu.hpp).
    case cpu::Isa::amx:
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
inline BlockKernelSet block_kernel_set(cpu::Isa isa, const BlockLayout& L) {
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

/// xs[m][j] = x[m, j*J] + ... + x[m, j*J + J - 1] (added in column order from 0), J = sub_block:
/// the float32 block kernels' sub-block sums of x, computed once per call.
inline void block_xsums(const float* x, Index M, Index ldx, const PackedWeights& w, std::vector<float>& xs) {
  const BlockLayout& L = w.block();
  const Index J = L.sub_block(), n = L.cols() / J;
  xs.assign(size_t(M * n), 0.0f);
  for (Index m = 0; m < M; ++m)
    for (Index j = 0; j < n; ++j) {
      float s = 0.0f;
      for (Index k = j * J; k < (j + 1) * J; ++k) s = s + x[m * ldx + k];
      xs[size_t(m * n + j)] = s;
    }
}

}  // namespace lowbit::detail
