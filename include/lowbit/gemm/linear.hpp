// linear.hpp: y = x * W^T (+ bias, activation) with packed quantized weights; the public GEMM/GEMV.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/block_weights.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/epilogue.hpp>
#include <lowbit/gemm/kernel_set.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#ifndef LOWBIT_SEPARATE_KERNELS
#include <lowbit/gemm/block_dispatch.hpp>
#include <lowbit/gemm/dispatch.hpp>
#endif

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

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

/// Threads for a call: 1 for small problems, where a parallel region costs more than it saves
/// (so 2 threads are never slower than 1), and never more than half the output blocks.
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

/// How a call is split: `threads` threads take parts of `chunk_blocks` output blocks (16
/// channels each) from a shared counter. About 8 parts per thread, so that a thread slowed by a
/// busy core hands its share to the others, but at least 4 blocks (one 64-channel panel) and
/// about 1 MFLOP a part, so that taking a part costs nothing next to running it.
struct Split {
  int threads = 1;
  Index chunk_blocks = 1;
};

inline Split linear_split(Index M, Index N, Index K) {
  Split s;
  const Index blocks = (N + PackedWeights::block_rows - 1) / PackedWeights::block_rows;
  s.threads = linear_threads(M, N, K);
  if (s.threads == 1) {
    s.chunk_blocks = std::max<Index>(1, blocks);
    return s;
  }
  const double block_ops = 2.0 * double(M) * double(K) * double(PackedWeights::block_rows);
  const Index min_blocks = std::max<Index>(4, Index(std::ceil(1.0e6 / block_ops)));
  Index c = (blocks + 8 * s.threads - 1) / (8 * s.threads);
  c = std::max(c, min_blocks);
  s.chunk_blocks = (c + 3) / 4 * 4;
  return s;
}

inline std::vector<float>& xsum_workspace() {
  thread_local std::vector<float> xs;
  return xs;
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
    if (!detail::all_finite(x + m * ldx, K))
      for (Index k = 0; k < K; ++k)
        detail::require(std::isfinite(x[m * ldx + k]), "x({}, {}): expected a finite value, got {}", m, k,
                        x[m * ldx + k]);
  const cpu::Isa isa = cpu::active_isa();
  const detail::KernelSet ks = detail::kernel_set(isa);
  const bool blockw = w.is_block();
  const detail::BlockKernelSet bks = blockw ? detail::block_kernel_set(isa, w.block()) : detail::BlockKernelSet{};

  detail::QuantizedActivations* a = nullptr;
  const float* xs = nullptr;
  if (mode != ActivationQuant::float32) {
    a = &detail::activation_workspace();
    ks.quantize(x, M, K, ldx, w, mode, *a);
    if (blockw) detail::block_activation_sums(*a, w);
  } else if (blockw && w.block().offset()) {
    std::vector<float>& ws = detail::xsum_workspace();
    detail::block_xsums(x, M, ldx, w, ws);
    xs = ws.data();
  }
  const detail::Split split = detail::linear_split(M, N, K);
  const Index blocks = w.blocks();
  auto run = [&](Index c) {
    const Index b0 = std::min(blocks, c * split.chunk_blocks), b1 = std::min(blocks, b0 + split.chunk_blocks);
    const Index n0 = b0 * PackedWeights::block_rows, n1 = std::min(N, b1 * PackedWeights::block_rows);
    if (n0 >= n1) return;
    if (blockw) {
      if (a)
        bks.linear_int(*a, w, y, ldy, n0, n1);
      else
        bks.linear_f32(x, M, ldx, xs, w, y, ldy, n0, n1);
    } else if (a) {
      ks.linear_int(*a, w, y, ldy, n0, n1);
    } else {
      ks.linear_f32(x, M, ldx, w, y, ldy, n0, n1);
    }
    for (Index m = 0; m < M; ++m) detail::apply_epilogue(y + m * ldy + n0, n0, n1 - n0, opt.epilogue);
  };
  const Index chunks = (blocks + split.chunk_blocks - 1) / split.chunk_blocks;
#ifdef _OPENMP
  if (split.threads > 1) {
    // Parts are taken in order from a shared counter, so a thread that the OS slows down (a busy
    // core) takes fewer; every part runs exactly once, with the same code, whoever runs it.
    std::atomic<Index> next{0};
#pragma omp parallel num_threads(split.threads)
    {
      for (Index c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
           c = next.fetch_add(1, std::memory_order_relaxed))
        run(c);
    }
    return;
  }
#endif
  for (Index c = 0; c < chunks; ++c) run(c);
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
