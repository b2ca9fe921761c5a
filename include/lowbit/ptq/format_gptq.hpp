// format_gptq.hpp: GPTQ into a GGUF block format: the format's block is GPTQ's group, its stored
// parameters (K-quant sub-block scales and mins included) chosen on the format's grid when the
// block is first reached, every weight rounded to its nearest code under them, and the rounding
// error spread over the columns not yet quantized through the inverse Hessian.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/format_params.hpp>
#include <lowbit/ptq/format_result.hpp>
#include <lowbit/ptq/gptq.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit::ptq {

/// Options of format_gptq().
struct FormatGptqOptions {
  float damp = 0.01f;      ///< dampening added to H's diagonal, relative to its mean (>= 0)
  Index block_size = 128;  ///< columns per lazy batch update (> 0)
  bool act_order = true;   ///< quantize columns in decreasing order of diag(H)
  /// Extra attempts if H + damp·I cannot be factorised, each with 10x the dampening (>= 0).
  int damp_retries = 2;
  /// Choose each block's parameters by the clipping search weighted by diag(H) (`clip`); false
  /// takes the plain rounding's parameters (γ = 1) of the current weights.
  bool clip_search = true;
  FormatClipOptions clip;
  /// Row chunks quantized in parallel when compiled with OpenMP: 0 = omp_get_max_threads(),
  /// 1 = serial. Rows are split into chunks of a fixed size, so results do not depend on it.
  int threads = 0;
};

/// What GPTQ needs from a layer's input statistics, computed once and shared by every weight that
/// reads the input (q/k/v, gate/up) and every format tried: the upper-triangular U with
/// H⁻¹ = UᵀU for the dampened H = 2·XᵀX, its columns in `order`.
struct GptqFactor {
  Eigen::MatrixXf U;              ///< upper triangular, over the columns in `order`
  std::vector<Index> order;       ///< order[i]: the input column quantized i-th
  std::vector<Index> position;    ///< position[c]: where column c is in `order`
  std::vector<float> importance;  ///< diag(H) per input column (H = 2·XᵀX; 0: a dead input)
  double damp = 0;                ///< the absolute dampening that made H + damp·I factorisable
  Index tokens = 0;               ///< calibration tokens behind H

  Index features() const { return Index(order.size()); }
};

namespace detail {

inline void validate(const FormatGptqOptions& o) {
  lowbit::detail::require(std::isfinite(o.damp) && o.damp >= 0.0f,
                          "options.damp: expected a finite value >= 0, got {}", o.damp);
  lowbit::detail::require(o.block_size > 0, "options.block_size: expected > 0, got {}",
                          o.block_size);
  lowbit::detail::require(o.damp_retries >= 0, "options.damp_retries: expected >= 0, got {}",
                          o.damp_retries);
  lowbit::detail::require(o.threads >= 0, "options.threads: expected >= 0, got {}", o.threads);
  validate(o.clip);
}

/// U with H⁻¹ = UᵀU for H = 2·gram permuted by `order` (dead inputs' diagonal set to 1) plus
/// damp·I, in one n×n double buffer: it is filled with J·Hp·J (J the reversal), factorised in
/// place (J·Hp·J = L·Lᵀ), reversed in memory (R = J·L·J, upper, with Hp = R·Rᵀ) and inverted in
/// place (U = R⁻¹). `damp` grows 10x per retry; throws when H stays not positive definite.
inline Eigen::MatrixXf gptq_inverse_factor(const Eigen::MatrixXd& gram,
                                           const std::vector<Index>& order,
                                           const std::vector<float>& importance, double& damp,
                                           int retries) {
  const Index n = gram.rows();
  Eigen::MatrixXd a(n, n);
  for (int attempt = 0;; ++attempt) {
    for (Index j = 0; j < n; ++j) {
      const Index cj = order[size_t(n - 1 - j)];
      for (Index i = j; i < n; ++i) a(i, j) = 2.0 * gram(order[size_t(n - 1 - i)], cj);
      if (importance[size_t(cj)] == 0.0f) a(j, j) = 1.0;
      a(j, j) += damp;
    }
    Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>, Eigen::Lower> llt(a);
    if (llt.info() == Eigen::Success) {
      std::reverse(a.data(), a.data() + n * n);
      a.triangularView<Eigen::StrictlyLower>().setZero();
      if (a.diagonal().minCoeff() > 0.0) {
        invert_upper(a);
        if (a.allFinite()) return a.cast<float>();
      }
    }
    lowbit::detail::require(attempt < retries,
                            "calib: the Hessian 2·XᵀX ({}x{}) is not positive definite even with "
                            "dampening {} added to its diagonal (check the calibration data)",
                            n, n, damp);
    damp *= 10.0;
  }
}

/// Rows of one chunk GPTQ works on together.
inline constexpr Index kGptqChunkRows = 256;

/// GPTQ of rows [r0, r1) of W into `out` (their packed rows) and, if not null, `used` (the
/// values the error feedback used, row-major rows × cols of the whole W). Arguments are valid.
inline void format_gptq_chunk(const Eigen::Ref<const MatrixXfR>& W, Index r0, Index r1,
                              const formats::Format& f, const GptqFactor& F,
                              const FormatGptqOptions& o, const std::vector<float>& gammas,
                              uint8_t* out, float* used) {
  const Index R = r1 - r0, K = W.cols(), bs = f.block_size, nb = K / bs, sub = f.sub_block;
  const Index subs_per_row = K / sub;
  const size_t row_bytes = size_t(nb) * size_t(f.type_size);
  const formats::detail::CodeSet set{f.qmin, f.qmax, f.levels, f.n_levels};
  // Wp: the columns of W in `order`, one per row (a column of W is then contiguous).
  MatrixXfR Wp(K, R);
  for (Index i = 0; i < K; ++i) {
    const Index c = F.order[size_t(i)];
    if (F.importance[size_t(c)] == 0.0f)
      Wp.row(i).setZero();  // a dead input: quantized as zero weights (as the reference GPTQ)
    else
      for (Index r = 0; r < R; ++r) Wp(i, r) = W(r0 + r, c);
  }
  std::vector<formats::BlockParams> params(size_t(R * nb));
  std::vector<formats::SubBlockParams> eff(size_t(R * subs_per_row));
  std::vector<int8_t> codes(size_t(R * K));
  std::vector<char> ready(size_t(nb), 0);
  const Index B = std::min(o.block_size, K);
  MatrixXfR err(B, R), cur(R, bs);
  Eigen::RowVectorXf col(R);
  for (Index i1 = 0; i1 < K; i1 += B) {
    const Index i2 = std::min(K, i1 + B);
    for (Index i = i1; i < i2; ++i) {
      const Index c = F.order[size_t(i)], b = c / bs;
      if (!ready[size_t(b)]) {
        // The block's columns as they stand now: those beyond this batch still owe its lazy
        // update from the columns quantized so far.
        const Index c0 = b * bs;
        for (Index cc = c0; cc < c0 + bs; ++cc) {
          const Index j = F.position[size_t(cc)];
          col = Wp.row(j);
          if (j >= i2 && i > i1)
            col.noalias() -= F.U.block(i1, j, i - i1, 1).transpose() * err.topRows(i - i1);
          cur.col(cc - c0) = col.transpose();
        }
        const float* w = o.clip_search ? F.importance.data() + c0 : nullptr;
        for (Index r = 0; r < R; ++r) {
          const formats::BlockParams p =
              search_block_params(f, cur.row(r).data(), w, gammas, o.clip.refine);
          params[size_t(r * nb + b)] = p;
          for (int jj = 0; jj < f.sub_blocks(); ++jj)
            eff[size_t(r * subs_per_row + c0 / sub + jj)] = f.sub_block_params(p, jj);
        }
        ready[size_t(b)] = 1;
      }
      const float d = F.U(i, i);
      const Index sb = c / sub;
      for (Index r = 0; r < R; ++r) {
        const formats::SubBlockParams& s = eff[size_t(r * subs_per_row + sb)];
        const float w = Wp(i, r);
        const int q = formats::detail::nearest_code(w, s, set, f.has_offset);
        codes[size_t(r * K + c)] = int8_t(q);
        const float wh = formats::decode_value(s, q, f.has_offset);
        err(i - i1, r) = (w - wh) / d;
        if (used) used[size_t((r0 + r) * K + c)] = wh;
      }
      if (i + 1 < i2)
        Wp.middleRows(i + 1, i2 - i - 1).noalias() -=
            F.U.block(i, i + 1, 1, i2 - i - 1).transpose() * err.row(i - i1);
    }
    if (i2 < K)
      Wp.bottomRows(K - i2).noalias() -=
          F.U.block(i1, i2, i2 - i1, K - i2).transpose() * err.topRows(i2 - i1);
  }
  for (Index r = 0; r < R; ++r)
    for (Index b = 0; b < nb; ++b)
      f.pack(params[size_t(r * nb + b)], codes.data() + r * K + b * bs,
             out + size_t(r) * row_bytes + size_t(b) * size_t(f.type_size));
}

inline void require_factor(const GptqFactor& F, Index cols) {
  lowbit::detail::require(F.features() == cols && F.U.rows() == cols && F.U.cols() == cols &&
                              Index(F.position.size()) == cols && Index(F.importance.size()) == cols,
                          "factor: expected the factor of {} input features, got {}", cols,
                          F.features());
}

}  // namespace detail

/// The GPTQ factor of a layer input: importance diag(H) with H = 2·XᵀX (from `calib`), the column
/// order (decreasing diag(H) with opts.act_order, stable), dampening opts.damp · mean diag(H)
/// (dead inputs counted as 1) and U. Memory: one n×n double buffer beside calib's XᵀX, then the
/// float U. Throws lowbit::Error for empty statistics, bad options, or a Hessian that is not
/// positive definite even after opts.damp_retries extra dampenings.
inline GptqFactor gptq_factor(const Calibration& calib, const FormatGptqOptions& opts = {}) {
  detail::validate(opts);
  lowbit::detail::require(!calib.empty(), "calib: expected at least one batch of activations "
                          "(empty calibration)");
  const Index n = calib.features();
  const Eigen::MatrixXd& G = calib.gram();
  GptqFactor F;
  F.tokens = calib.tokens();
  F.importance.resize(size_t(n));
  double mean = 0;
  for (Index c = 0; c < n; ++c) {
    F.importance[size_t(c)] = float(2.0 * G(c, c));
    mean += G(c, c) > 0 ? 2.0 * G(c, c) : 1.0;
  }
  F.order.resize(size_t(n));
  std::iota(F.order.begin(), F.order.end(), Index(0));
  if (opts.act_order)
    std::stable_sort(F.order.begin(), F.order.end(), [&](Index a, Index b) {
      return F.importance[size_t(a)] > F.importance[size_t(b)];
    });
  F.position.resize(size_t(n));
  for (Index i = 0; i < n; ++i) F.position[size_t(F.order[size_t(i)])] = i;
  F.damp = double(opts.damp) * mean / double(n);
  F.U = detail::gptq_inverse_factor(G, F.order, F.importance, F.damp, opts.damp_retries);
  return F;
}

/// GPTQ of every row of W ([rows, cols], finite, cols a multiple of the format's block) into
/// `type` with a precomputed factor of its input: writes rows · row_bytes(type, cols) bytes to
/// `out` (GGUF's layout). Rows are independent given the factor, so a large W may be quantized in
/// parts of rows with one factor. `used` (optional) receives the values the error feedback used
/// (equal, bit for bit, to the decoded `out`). Throws lowbit::Error for bad arguments.
inline void format_gptq_rows(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                             const GptqFactor& factor, const FormatGptqOptions& opts, uint8_t* out,
                             MatrixXfR* used = nullptr) {
  const formats::Format& f = detail::require_block_format(type, W.cols());
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  detail::require_factor(factor, W.cols());
  lowbit::detail::require(out != nullptr || W.rows() == 0, "out: expected a buffer, got nullptr");
  if (used) used->resize(W.rows(), W.cols());
  const std::vector<float> gammas =
      detail::clip_grid(opts.clip_search ? opts.clip : FormatClipOptions{1.0f, 1, false});
  const size_t row_bytes = size_t(formats::row_bytes(type, uint64_t(W.cols())));
  const Index chunks = (W.rows() + detail::kGptqChunkRows - 1) / detail::kGptqChunkRows;
  int threads = 1;
#ifdef _OPENMP
  threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
  if (omp_in_parallel()) threads = 1;
#endif
  threads = int(std::max<Index>(1, std::min<Index>(threads, chunks)));
  float* used_data = used ? used->data() : nullptr;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
#endif
  for (Index k = 0; k < chunks; ++k) {
    const Index r0 = k * detail::kGptqChunkRows;
    const Index r1 = std::min(W.rows(), r0 + detail::kGptqChunkRows);
    detail::format_gptq_chunk(W, r0, r1, f, factor, opts, gammas, out + size_t(r0) * row_bytes,
                              used_data);
  }
  (void)threads;
}

/// GPTQ into a GGUF block format: W ([out, in], finite; in a multiple of the format's block)
/// column by column, each rounding error spread over the columns not yet quantized through the
/// inverse of H = 2·XᵀX (from `calib`), so that the layer output X·Ŵᵀ stays close to X·Wᵀ.
/// The format's block is the group: when a block's first column is reached (in act order),
/// every sub-block's wanted (scale, offset) is chosen from the block's current, error-updated
/// weights by the clipping search weighted by diag(H) and fitted to the format's grid (fp16 d,
/// dmin, the integer sub-block scales and mins); every column is then rounded to its nearest
/// code under the effective parameters of its sub-block. The bytes are formats::pack of those
/// parameters and codes. `used` (optional) receives the values the error feedback used, which
/// equal the decoded result bit for bit. Throws lowbit::Error for bad input.
inline FormatResult format_gptq(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                                const Calibration& calib, const FormatGptqOptions& opts = {},
                                MatrixXfR* used = nullptr) {
  detail::require_block_format(type, W.cols());
  detail::validate(opts);
  lowbit::detail::require_finite(W, "W");
  detail::require_calibration(calib, W.cols());
  const GptqFactor factor = gptq_factor(calib, opts);
  std::vector<uint8_t> data(size_t(W.rows()) * size_t(formats::row_bytes(type, uint64_t(W.cols()))));
  format_gptq_rows(W, type, factor, opts, data.data(), used);
  return detail::make_format_result("gptq", W, type, std::move(data), &calib);
}

/// As above with calibration activations X ([tokens, in]).
inline FormatResult format_gptq(const Eigen::Ref<const MatrixXfR>& W, formats::Type type,
                                const Eigen::Ref<const MatrixXfR>& X,
                                const FormatGptqOptions& opts = {}) {
  lowbit::detail::require_finite(W, "W");
  return format_gptq(W, type, detail::calibrate(X, W.cols()), opts);
}

}  // namespace lowbit::ptq
