// linear.hpp: y = x * W^T (+ bias, activation) with packed quantized weights; the public GEMM/GEMV.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/dispatch.hpp>
#include <lowbit/gemm/epilogue.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit {

/// Options of one linear() call.
struct LinearOptions {
  /// int8 (W8A8/W4A8 with dynamic per-row activations) is the fast default; float32 keeps
  /// activations in fp32 (weight-only W8A32/W4A32).
  ActivationQuant activations = ActivationQuant::int8;
  Epilogue epilogue;
};

namespace detail {

/// Output blocks of 16 channels per thread: 1 thread for small problems, where a parallel region
/// costs more than it saves (so 2 threads are never slower than 1).
inline int linear_threads(Index M, Index N, Index K) {
#ifdef _OPENMP
  const double ops = 2.0 * double(M) * double(N) * double(K);
  const Index blocks = (N + PackedWeights::block_rows - 1) / PackedWeights::block_rows;
  int t = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (ops < 4.0e6) t = 1;
  return int(std::max<Index>(1, std::min<Index>(t, blocks / 2)));
#else
  (void)M, (void)N, (void)K;
  return 1;
#endif
}

inline QuantizedActivations& activation_workspace() {
  thread_local QuantizedActivations a;
  return a;
}

}  // namespace detail

/// y[M, N] = x[M, K] * W^T, then the epilogue, with raw pointers: x row-major with row stride
/// ldx >= K, y row-major with row stride ldy >= N. The math of every path is defined in
/// gemm/reference.hpp; every Isa gives bit-identical results, for any number of OpenMP threads.
/// Throws lowbit::Error (before writing y) for null pointers, empty or non-finite x, K !=
/// w.cols(), bad strides, an invalid epilogue or options, or int8_per_group activations with
/// weights that are not per group.
inline void linear(const float* x, Index M, Index K, Index ldx, const PackedWeights& w, float* y,
                   Index ldy, const LinearOptions& opt = {}) {
  detail::require(w.rows() > 0, "w: expected packed weights, got an empty PackedWeights");
  detail::require(x != nullptr && y != nullptr, "x/y: expected non-null pointers");
  detail::require(M > 0, "x: expected at least one row, got {}", M);
  detail::require(K == w.cols(), "x: expected {} columns (w.cols()), got {}", w.cols(), K);
  const Index N = w.rows();
  detail::require(ldx >= K, "ldx: expected >= {} (K), got {}", K, ldx);
  detail::require(ldy >= N, "ldy: expected >= {} (N), got {}", N, ldy);
  const ActivationQuant mode = opt.activations;
  detail::require(mode == ActivationQuant::float32 || mode == ActivationQuant::int8 ||
                      mode == ActivationQuant::uint8 || mode == ActivationQuant::int8_per_group,
                  "options.activations: not an ActivationQuant value");
  detail::require(mode != ActivationQuant::int8_per_group || w.per_group(),
                  "options.activations: int8_per_group needs per-group weights");
  detail::validate(opt.epilogue, N);
  for (Index m = 0; m < M; ++m)
    for (Index k = 0; k < K; ++k)
      if (!std::isfinite(x[m * ldx + k]))
        detail::fail("x({}, {}): expected a finite value, got {}", m, k, x[m * ldx + k]);
  const detail::KernelSet ks = detail::kernel_set(cpu::active_isa());

  detail::QuantizedActivations* a = nullptr;
  if (mode != ActivationQuant::float32) {
    a = &detail::activation_workspace();
    ks.quantize(x, M, K, ldx, w, mode, *a);
  }
  const int threads = detail::linear_threads(M, N, K);
  const Index blocks = w.blocks();
  auto run = [&](int t) {
    const Index b0 = blocks * t / threads, b1 = blocks * (t + 1) / threads;
    const Index n0 = b0 * PackedWeights::block_rows, n1 = std::min(N, b1 * PackedWeights::block_rows);
    if (n0 >= n1) return;
    if (a)
      ks.linear_int(*a, w, y, ldy, n0, n1);
    else
      ks.linear_f32(x, M, ldx, w, y, ldy, n0, n1);
    for (Index m = 0; m < M; ++m) detail::apply_epilogue(y + m * ldy + n0, n0, n1 - n0, opt.epilogue);
  };
#ifdef _OPENMP
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num());
    return;
  }
#endif
  run(0);
}

/// y = x * W^T (+ epilogue) into a caller's matrix y of shape [x.rows(), w.rows()].
inline void linear(const Eigen::Ref<const MatrixXfR>& x, const PackedWeights& w,
                   Eigen::Ref<MatrixXfR> y, const LinearOptions& opt = {}) {
  detail::require(y.rows() == x.rows() && y.cols() == w.rows(),
                  "y: expected a {}x{} matrix, got {}x{}", x.rows(), w.rows(), y.rows(), y.cols());
  linear(x.data(), x.rows(), x.cols(), x.outerStride(), w, y.data(), y.outerStride(), opt);
}

/// y = x * W^T (+ epilogue): x is [M, K] (tokens x in_features), the result [M, N].
inline MatrixXfR linear(const Eigen::Ref<const MatrixXfR>& x, const PackedWeights& w,
                        const LinearOptions& opt = {}) {
  detail::require(x.size() > 0, "x: expected a non-empty matrix");
  MatrixXfR y(x.rows(), w.rows());
  linear(x, w, y, opt);
  return y;
}

}  // namespace lowbit
