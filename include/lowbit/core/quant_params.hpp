// quant_params.hpp: scales and zero points, and how ranges become them (MinMaxObserver's rule).
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace lowbit {

/// Parameters of one quantization block.
struct AffineParams {
  float scale = 1.0f;
  int32_t zero_point = 0;
};

/// Quantization parameters: one entry per tensor, per row, or per (row, group) in row-major
/// order of groups (see param_index()).
struct QuantParams {
  Scheme scheme;
  std::vector<float> scale;
  std::vector<int32_t> zero_point;

  /// The parameters of block `i`.
  AffineParams at(Index i) const {
    return {scale[static_cast<size_t>(i)], zero_point[static_cast<size_t>(i)]};
  }
};

/// Throws lowbit::Error unless `p` fits a rows x cols matrix: a valid scheme, one scale and one
/// zero point per block, finite scales > 0, zero points in [qmin, qmax] (0 when symmetric).
inline void validate(const QuantParams& p, Index rows, Index cols) {
  validate(p.scheme);
  const auto n = static_cast<size_t>(param_count(p.scheme, rows, cols));
  detail::require(p.scale.size() == n, "params.scale: expected {} entries for a {}x{} {} matrix, got {}",
                  n, rows, cols, to_string(p.scheme.granularity), p.scale.size());
  detail::require(p.zero_point.size() == n,
                  "params.zero_point: expected {} entries for a {}x{} {} matrix, got {}", n, rows,
                  cols, to_string(p.scheme.granularity), p.zero_point.size());
  const int qmin = p.scheme.qmin(), qmax = p.scheme.qmax();
  for (size_t i = 0; i < n; ++i) {
    detail::require(std::isfinite(p.scale[i]) && p.scale[i] > 0.0f,
                    "params.scale[{}]: expected a finite value > 0, got {}", i, p.scale[i]);
    const int32_t z = p.zero_point[i];
    detail::require(z >= qmin && z <= qmax, "params.zero_point[{}]: expected {}..{}, got {}", i,
                    qmin, qmax, z);
    detail::require(!p.scheme.symmetric || z == 0,
                    "params.zero_point[{}]: a symmetric scheme needs 0, got {}", i, z);
  }
}

namespace detail {

inline void require_finite(const Eigen::Ref<const MatrixXfR>& x, const char* name) {
  require(x.size() > 0, "{}: expected a non-empty matrix", name);
  if (!x.allFinite())
    for (Index r = 0; r < x.rows(); ++r)
      for (Index c = 0; c < x.cols(); ++c)
        require(std::isfinite(x(r, c)), "{}({}, {}): expected a finite value, got {}", name, r, c,
                x(r, c));
}

inline void require_gamma(float gamma) {
  require(std::isfinite(gamma) && gamma > 0.0f, "gamma: expected a finite value > 0, got {}",
          gamma);
}

/// The rule without validation; callers have checked min <= max, finiteness and gamma.
inline AffineParams params_from_range_unchecked(float min, float max, const Scheme& s,
                                                float gamma) {
  const float eps = std::numeric_limits<float>::epsilon();
  const float min_neg = std::min(min * gamma, 0.0f);
  const float max_pos = std::max(max * gamma, 0.0f);
  const int qmin = s.qmin(), qmax = s.qmax();
  AffineParams p;
  if (s.symmetric) {
    const float amax = std::max(-min_neg, max_pos);
    p.scale = std::max(amax / (static_cast<float>(qmax - qmin) / 2.0f), eps);
    p.zero_point = 0;
  } else {
    p.scale = std::max((max_pos - min_neg) / static_cast<float>(qmax - qmin), eps);
    const float z = static_cast<float>(qmin) - std::nearbyint(min_neg / p.scale);
    p.zero_point = static_cast<int32_t>(std::clamp(z, static_cast<float>(qmin), static_cast<float>(qmax)));
  }
  return p;
}

}  // namespace detail

/// Parameters for the range [min, max], computed as torch.ao.quantization's MinMaxObserver does:
/// gamma scales the range first, the range is widened to include 0, the scale is floored at float
/// epsilon, symmetric scale = amax / ((qmax - qmin) / 2), the zero point is rounded and clamped.
inline AffineParams params_from_range(float min, float max, const Scheme& scheme,
                                      float gamma = 1.0f) {
  validate(scheme);
  detail::require(std::isfinite(min) && std::isfinite(max),
                  "min/max: expected finite values, got [{}, {}]", min, max);
  detail::require(min <= max, "min/max: expected min <= max, got [{}, {}]", min, max);
  detail::require_gamma(gamma);
  return detail::params_from_range_unchecked(min, max, scheme, gamma);
}

/// Parameters from per-block ranges (e.g. an observer's running min/max): one entry per block,
/// each with its own clipping factor (`gammas` may hold one value for all blocks).
inline QuantParams params_from_ranges(const std::vector<float>& mins,
                                      const std::vector<float>& maxs, const Scheme& scheme,
                                      const std::vector<float>& gammas = {1.0f}) {
  validate(scheme);
  detail::require(!mins.empty(), "mins: expected at least one range");
  detail::require(mins.size() == maxs.size(), "maxs: expected {} entries (as mins), got {}",
                  mins.size(), maxs.size());
  detail::require(gammas.size() == 1 || gammas.size() == mins.size(),
                  "gammas: expected 1 or {} entries, got {}", mins.size(), gammas.size());
  for (size_t i = 0; i < mins.size(); ++i) {
    detail::require(std::isfinite(mins[i]) && std::isfinite(maxs[i]) && mins[i] <= maxs[i],
                    "mins/maxs[{}]: expected finite min <= max, got [{}, {}]", i, mins[i],
                    maxs[i]);
    detail::require_gamma(gammas[gammas.size() == 1 ? 0 : i]);
  }
  QuantParams out{scheme, std::vector<float>(mins.size()), std::vector<int32_t>(mins.size())};
  for (size_t i = 0; i < mins.size(); ++i) {
    const auto p = detail::params_from_range_unchecked(mins[i], maxs[i], scheme,
                                                       gammas[gammas.size() == 1 ? 0 : i]);
    out.scale[i] = p.scale;
    out.zero_point[i] = p.zero_point;
  }
  return out;
}

/// Per-block [min, max] of `x` under the scheme's granularity, in param_index() order.
inline void block_ranges(const Eigen::Ref<const MatrixXfR>& x, const Scheme& scheme,
                         std::vector<float>& mins, std::vector<float>& maxs) {
  validate(scheme);
  detail::require_finite(x, "x");
  const auto n = static_cast<size_t>(param_count(scheme, x.rows(), x.cols()));
  mins.assign(n, std::numeric_limits<float>::infinity());
  maxs.assign(n, -std::numeric_limits<float>::infinity());
  detail::for_each_block(scheme, x.rows(), x.cols(), [&](Index p, Index r, Index c0, Index c1) {
    const auto block = x.row(r).segment(c0, c1 - c0);
    const auto i = static_cast<size_t>(p);
    mins[i] = std::min(mins[i], block.minCoeff());
    maxs[i] = std::max(maxs[i], block.maxCoeff());
  });
}

/// Min-max parameters for every block of `x` (per tensor, per row or per row group), with the
/// clipping factor gamma applied to each block's range.
inline QuantParams choose_params(const Eigen::Ref<const MatrixXfR>& x, const Scheme& scheme,
                                 float gamma = 1.0f) {
  detail::require_gamma(gamma);
  std::vector<float> mins, maxs;
  block_ranges(x, scheme, mins, maxs);
  return params_from_ranges(mins, maxs, scheme, {gamma});
}

/// As above with one clipping factor per block (the result of a per-block gamma search).
inline QuantParams choose_params(const Eigen::Ref<const MatrixXfR>& x, const Scheme& scheme,
                                 const std::vector<float>& gammas) {
  std::vector<float> mins, maxs;
  block_ranges(x, scheme, mins, maxs);
  detail::require(gammas.size() == mins.size(), "gammas: expected {} entries (one per block), got {}",
                  mins.size(), gammas.size());
  return params_from_ranges(mins, maxs, scheme, gammas);
}

}  // namespace lowbit
