// format_gamma.hpp: format_gamma, the paper's clipping factor γ searched on a GGUF format's grid
// per sub-block, minimising the weight error, the importance-weighted error or the layer-output
// error (sub-blocks of a row coupled through XᵀX).
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/format_params.hpp>
#include <lowbit/ptq/format_result.hpp>
#include <lowbit/ptq/layer_error.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit::ptq {

/// Options of format_gamma().
struct FormatGammaOptions {
  FormatClipOptions clip;  ///< the γ grid (and the K-quants' refinement on the integer grid)
  /// What is minimised when calibration is given (without it, the weight error): the layer-output
  /// error (default), the error weighted by the per-column mean x², or the plain weight error.
  ErrorMetric metric = ErrorMetric::output;
  int threads = 0;  ///< row chunks in parallel (OpenMP): 0 = omp_get_max_threads(), 1 = serial
};

namespace detail {

inline void validate(const FormatGammaOptions& o) {
  validate(o.clip);
  lowbit::detail::require(o.metric == ErrorMetric::weight || o.metric == ErrorMetric::importance ||
                              o.metric == ErrorMetric::output,
                          "options.metric: not an ErrorMetric value");
  lowbit::detail::require(o.threads >= 0, "options.threads: expected >= 0, got {}", o.threads);
}

/// Rows [r0, r1) of W: parameters per block from the clipping search weighted by `w` (null: 1),
/// then, with `gram`, one coordinate-descent sweep over the sub-blocks of each row choosing the γ
/// (snapped to the grid of the block's d, dmin by fit_sub_block) that minimises the row's output
/// error given the others (the current choice is a candidate, so it never grows); packed to out.
inline void format_gamma_chunk(const Eigen::Ref<const MatrixXfR>& W, Index r0, Index r1,
                               const formats::Format& f, const std::vector<float>& gammas,
                               bool refine, const float* w, const Eigen::MatrixXf* gram,
                               uint8_t* out) {
  const Index R = r1 - r0, K = W.cols(), bs = f.block_size, nb = K / bs, m = f.sub_block;
  const int nsub = f.sub_blocks();
  const size_t row_bytes = size_t(nb) * size_t(f.type_size);
  const auto row = [&](Index r) { return W.data() + r * W.outerStride(); };
  std::vector<formats::BlockParams> params(size_t(R * nb));
  std::vector<int8_t> codes(static_cast<size_t>(K));
  for (Index r = 0; r < R; ++r)
    for (Index b = 0; b < nb; ++b)
      params[size_t(r * nb + b)] = search_block_params(f, row(r0 + r) + b * bs, w ? w + b * bs : nullptr,
                                                       gammas, refine);
  if (gram != nullptr) {
    const formats::detail::CodeSet set{f.qmin, f.qmax, f.levels, f.n_levels};
    // delta = W − Ŵ of the chunk's rows.
    MatrixXfR delta(R, K);
    for (Index r = 0; r < R; ++r)
      for (Index b = 0; b < nb; ++b) {
        const formats::BlockParams& p = params[size_t(r * nb + b)];
        for (int j = 0; j < nsub; ++j) {
          const formats::SubBlockParams s = f.sub_block_params(p, j);
          const formats::detail::NearestCode round(s, set, f.has_offset, int(m));
          for (Index i = b * bs + j * m; i < b * bs + (j + 1) * m; ++i) {
            const float x = row(r0 + r)[i];
            delta(r, i) = x - formats::decode_value(s, round(x), f.has_offset);
          }
        }
      }
    MatrixXfR cross(R, m), dk(R, m), best_d(R, m);
    Eigen::VectorXd best(R);
    std::vector<formats::BlockParams> best_p(static_cast<size_t>(R));
    for (Index g = 0; g < K / m; ++g) {
      const Index c0 = g * m, b = c0 / bs;
      const int j = int((c0 - b * bs) / m);
      const Eigen::MatrixXf G_jj = gram->block(c0, c0, m, m);
      cross.noalias() = delta * gram->middleCols(c0, m);
      cross.noalias() -= delta.middleCols(c0, m) * G_jj;
      cross *= 2.0f;
      // The current choice's error.
      best_d = delta.middleCols(c0, m);
      {
        const MatrixXfR t = best_d * G_jj + cross;
        best = t.cwiseProduct(best_d).rowwise().sum().cast<double>();
      }
      for (Index r = 0; r < R; ++r) best_p[size_t(r)] = params[size_t(r * nb + b)];
      for (const float gamma : gammas) {
        std::vector<formats::BlockParams> cand(static_cast<size_t>(R));
        for (Index r = 0; r < R; ++r) {
          formats::BlockParams q = params[size_t(r * nb + b)];
          const float* x = row(r0 + r) + c0;
          f.fit_sub_block(q, j, f.wanted_params(x, int(m), gamma));
          const formats::SubBlockParams s = f.sub_block_params(q, j);
          const formats::detail::NearestCode round(s, set, f.has_offset, int(m));
          for (Index i = 0; i < m; ++i)
            dk(r, i) = x[i] - formats::decode_value(s, round(x[i]), f.has_offset);
          cand[size_t(r)] = q;
        }
        const MatrixXfR t = dk * G_jj + cross;
        const Eigen::VectorXd e = t.cwiseProduct(dk).rowwise().sum().cast<double>();
        for (Index r = 0; r < R; ++r)
          if (e[r] < best[r]) {
            best[r] = e[r];
            best_p[size_t(r)] = cand[size_t(r)];
            best_d.row(r) = dk.row(r);
          }
      }
      for (Index r = 0; r < R; ++r) params[size_t(r * nb + b)] = best_p[size_t(r)];
      delta.middleCols(c0, m) = best_d;
    }
  }
  for (Index r = 0; r < R; ++r) {
    for (Index b = 0; b < nb; ++b)
      nearest_codes(f, row(r0 + r) + b * bs, params[size_t(r * nb + b)], codes.data() + b * bs);
    for (Index b = 0; b < nb; ++b)
      f.pack(params[size_t(r * nb + b)], codes.data() + b * bs,
             out + size_t(r) * row_bytes + size_t(b) * size_t(f.type_size));
  }
}

inline std::vector<uint8_t> format_gamma_data(const Eigen::Ref<const MatrixXfR>& W,
                                              const formats::Format& f, const float* w,
                                              const Eigen::MatrixXf* gram,
                                              const FormatGammaOptions& o) {
  constexpr Index chunk_rows = 256;
  const std::vector<float> gammas = clip_grid(o.clip);
  const size_t row_bytes = size_t(W.cols() / f.block_size) * size_t(f.type_size);
  std::vector<uint8_t> data(size_t(W.rows()) * row_bytes);
  const Index chunks = (W.rows() + chunk_rows - 1) / chunk_rows;
  int threads = 1;
#ifdef _OPENMP
  threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  if (omp_in_parallel()) threads = 1;
#endif
  threads = int(std::max<Index>(1, std::min<Index>(threads, chunks)));
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
#endif
  for (Index k = 0; k < chunks; ++k) {
    const Index r0 = k * chunk_rows, r1 = std::min(W.rows(), r0 + chunk_rows);
    format_gamma_chunk(W, r0, r1, f, gammas, o.clip.refine, w, gram,
                       data.data() + size_t(r0) * row_bytes);
  }
  (void)threads;
  return data;
}

}  // namespace detail

/// γ-search on the format's grid minimising the weight error: every block's parameters from the
/// clipping search (format_params.hpp) of its own weights. Throws lowbit::Error for a type without
/// a block codec, rows that are not whole blocks, non-finite weights or bad options.
inline FormatResult format_gamma(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                                 const FormatGammaOptions& opts = {}) {
  const formats::Format& f = detail::require_block_format(type, W.cols());
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  return detail::make_format_result("gamma", W, type,
                                    detail::format_gamma_data(W, f, nullptr, nullptr, opts), nullptr);
}

/// γ-search on the format's grid minimising opts.metric on the calibration statistics: the
/// layer-output error ‖X·Wᵀ − X·Ŵᵀ‖² (default: parameters first from the search weighted by the
/// per-column mean x², then one sweep over each row's sub-blocks, each sub-block's γ chosen given
/// the others through XᵀX; never worse than that start on the calibration set), the error
/// weighted by the per-column mean x², or the weight error.
inline FormatResult format_gamma(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                                 const Calibration& calib, const FormatGammaOptions& opts = {}) {
  const formats::Format& f = detail::require_block_format(type, W.cols());
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());
  std::vector<float> imp;
  if (opts.metric != ErrorMetric::weight) imp = detail::column_importance(calib);
  Eigen::MatrixXf gram;
  if (opts.metric == ErrorMetric::output) gram = calib.gram().cast<float>();
  return detail::make_format_result(
      "gamma", W, type,
      detail::format_gamma_data(W, f, imp.empty() ? nullptr : imp.data(),
                                opts.metric == ErrorMetric::output ? &gram : nullptr, opts),
      &calib);
}

}  // namespace lowbit::ptq
