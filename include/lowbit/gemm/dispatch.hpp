// dispatch.hpp: the kernel table of each Isa, chosen at run time.
#pragma once

#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/kernel_set.hpp>
#include <lowbit/gemm/packed_weights.hpp>
#include <lowbit/gemm/kernels_avx2.hpp>
#include <lowbit/gemm/kernels_amx.hpp>
#include <lowbit/gemm/kernels_avx512.hpp>
#include <lowbit/gemm/kernels_neon.hpp>
#include <lowbit/gemm/kernels_scalar.hpp>
#include <lowbit/gemm/reference.hpp>

namespace lowbit::detail {

LOWBIT_KERNEL_TABLE KernelSet kernel_set(cpu::Isa isa) {
  switch (isa) {
#if defined(LOWBIT_X86)
    case cpu::Isa::amx:
      return {kernels::amx::quantize, kernels::amx::linear_int, kernels::amx::linear_f32};
    case cpu::Isa::avx512_vnni:
      return {kernels::avx512_vnni::quantize, kernels::avx512_vnni::linear_int, kernels::avx512_vnni::linear_f32};
    case cpu::Isa::avx2:
      return {kernels::avx2::quantize, kernels::avx2::linear_int, kernels::avx2::linear_f32};
#elif defined(LOWBIT_AARCH64)
    case cpu::Isa::neon_dotprod:
      return {kernels::neon_dotprod::quantize, kernels::neon_dotprod::linear_int, kernels::neon_dotprod::linear_f32};
    case cpu::Isa::neon:
      return {kernels::neon::quantize, kernels::neon::linear_int, kernels::neon::linear_f32};
#endif
    default:
      return {kernels::scalar::quantize, kernels::scalar::linear_int, kernels::scalar::linear_f32};
  }
}

}  // namespace lowbit::detail
