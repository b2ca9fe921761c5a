// dispatch.hpp: the kernel table of each Isa, chosen at run time.
#pragma once

#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/packed_weights.hpp>
#include <lowbit/gemm/reference.hpp>

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

inline KernelSet kernel_set(cpu::Isa isa) {
  switch (isa) {
    default:
      return {quantize_activations, kernels::reference::linear_int, kernels::reference::linear_f32};
  }
}

}  // namespace lowbit::detail
