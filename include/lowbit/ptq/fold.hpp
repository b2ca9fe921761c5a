// fold.hpp: folding per-channel scales and rotations into Linear weights (W·diag(s), W·Q, Qᵀ·W).
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/ptq/rotation.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lowbit::ptq {

namespace detail {

inline void require_finite_result(const MatrixXfR& out, const char* what) {
  lowbit::detail::require(out.allFinite(), "W: {} overflows float", what);
}

/// Block sizes of a block-diagonal rotation (each block non-empty); returns their sum.
inline Index blocks_size(const std::vector<Rotation>& blocks) {
  lowbit::detail::require(!blocks.empty(), "blocks: expected at least one rotation");
  Index n = 0;
  for (const auto& b : blocks) n += b.size();
  return n;
}

/// rows ← rows·diag(Q_0, Q_1, ...) for the row-major double rows.
inline void apply_blocks(Eigen::Ref<MatrixXdR> rows, const std::vector<Rotation>& blocks) {
  Index c = 0;
  for (const auto& b : blocks) {
    MatrixXdR part = rows.middleCols(c, b.size());
    b.apply(part);
    rows.middleCols(c, b.size()) = part;
    c += b.size();
  }
}

constexpr Index kFoldChunk = 256;  // rows converted to double at a time

}  // namespace detail

/// W·diag(s) ([out, in], s one finite entry per input): the Linear reading u gives, with these
/// weights, what W gives reading u∘s, e.g. an RMSNorm gain s folded into the Linears after it.
inline MatrixXfR scale_columns(const Eigen::Ref<const MatrixXfR>& W,
                               const Eigen::Ref<const Eigen::VectorXf>& s) {
  lowbit::detail::require_finite(W, "W");
  lowbit::detail::require(s.size() == W.cols(), "s: expected {} entries (W's columns), got {}",
                          W.cols(), s.size());
  for (Index j = 0; j < s.size(); ++j)
    lowbit::detail::require(std::isfinite(s(j)), "s({}): expected a finite value, got {}", j, s(j));
  MatrixXfR out = W.array().rowwise() * s.transpose().array();
  detail::require_finite_result(out, "W·diag(s)");
  return out;
}

/// W·Q ([out, n], computed in double, rounded once): the Linear reading x·Q instead of x gives
/// the same outputs, x·Q·(W·Q)ᵀ = x·Wᵀ.
inline MatrixXfR rotate_input(const Eigen::Ref<const MatrixXfR>& W, const Rotation& Q) {
  lowbit::detail::require_finite(W, "W");
  lowbit::detail::require(W.cols() == Q.size(), "W: expected {} columns (Q's size), got {}x{}",
                          Q.size(), W.rows(), W.cols());
  MatrixXfR out(W.rows(), W.cols());
  for (Index r = 0; r < W.rows(); r += detail::kFoldChunk) {
    const Index n = std::min(detail::kFoldChunk, W.rows() - r);
    MatrixXdR x = W.middleRows(r, n).cast<double>();
    Q.apply(x);
    out.middleRows(r, n) = x.cast<float>();
  }
  detail::require_finite_result(out, "W·Q");
  return out;
}

/// Qᵀ·W ([n, in], in double, rounded once): the Linear then writes y·Q instead of y.
inline MatrixXfR rotate_output(const Eigen::Ref<const MatrixXfR>& W, const Rotation& Q) {
  lowbit::detail::require_finite(W, "W");
  lowbit::detail::require(W.rows() == Q.size(), "W: expected {} rows (Q's size), got {}x{}", Q.size(),
                          W.rows(), W.cols());
  MatrixXfR out(W.rows(), W.cols());
  for (Index c = 0; c < W.cols(); c += detail::kFoldChunk) {  // (Qᵀ·W)ᵀ = Wᵀ·Q, by columns of W
    const Index n = std::min(detail::kFoldChunk, W.cols() - c);
    MatrixXdR x = W.middleCols(c, n).transpose().cast<double>();
    Q.apply(x);
    out.middleCols(c, n) = x.transpose().cast<float>();
  }
  detail::require_finite_result(out, "Qᵀ·W");
  return out;
}

/// W·diag(Q_0, Q_1, ...): block j acts on the next blocks[j].size() columns (the sizes must add
/// up to W's columns), e.g. one rotation per attention head on the output projection's input.
inline MatrixXfR rotate_input(const Eigen::Ref<const MatrixXfR>& W, const std::vector<Rotation>& blocks) {
  lowbit::detail::require_finite(W, "W");
  const Index n = detail::blocks_size(blocks);
  lowbit::detail::require(W.cols() == n, "W: expected {} columns (the blocks' sizes), got {}x{}", n,
                          W.rows(), W.cols());
  MatrixXfR out(W.rows(), W.cols());
  for (Index r = 0; r < W.rows(); r += detail::kFoldChunk) {
    const Index m = std::min(detail::kFoldChunk, W.rows() - r);
    MatrixXdR x = W.middleRows(r, m).cast<double>();
    detail::apply_blocks(x, blocks);
    out.middleRows(r, m) = x.cast<float>();
  }
  detail::require_finite_result(out, "W·Q");
  return out;
}

/// diag(Q_0, Q_1, ...)ᵀ·W: block j acts on the next blocks[j].size() rows, e.g. one rotation per
/// attention head on the value projection's output.
inline MatrixXfR rotate_output(const Eigen::Ref<const MatrixXfR>& W, const std::vector<Rotation>& blocks) {
  lowbit::detail::require_finite(W, "W");
  const Index n = detail::blocks_size(blocks);
  lowbit::detail::require(W.rows() == n, "W: expected {} rows (the blocks' sizes), got {}x{}", n,
                          W.rows(), W.cols());
  MatrixXfR out(W.rows(), W.cols());
  for (Index c = 0; c < W.cols(); c += detail::kFoldChunk) {
    const Index m = std::min(detail::kFoldChunk, W.cols() - c);
    MatrixXdR x = W.middleCols(c, m).transpose().cast<double>();
    detail::apply_blocks(x, blocks);
    out.middleCols(c, m) = x.transpose().cast<float>();
  }
  detail::require_finite_result(out, "Qᵀ·W");
  return out;
}

}  // namespace lowbit::ptq
