// entropy_observer.hpp: TensorRT-style KL-divergence (entropy) calibration of a clipping threshold.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <lowbit/calib/histogram.hpp>
#include <vector>

namespace lowbit::calib {
namespace detail {

/// KL(P || Q) of TensorRT's entropy calibration for every candidate bin count i from `levels`
/// to `used` (entry i - levels), on a histogram of |x| whose bins from `used` on are empty.
/// P is the first i bins with the mass beyond folded into bin i - 1; Q is those i bins (without
/// the folded mass) merged into `levels` groups of equal width (edges floor(g * i / levels)) and
/// spread back evenly over each group's non-empty bins. Both are normalised, then smoothed: zero
/// entries become eps and the vector is renormalised.
/// Evaluated in closed form: wherever a bin is empty P and Q both hold eps and add nothing, so
/// only non-empty bins count, and prefix sums give each group's terms: O(levels) per candidate.
inline std::vector<double> kl_divergences(const std::vector<double>& counts, Index used, int levels,
                                          double eps = 1e-4) {
  // Prefix sums over bins: counts (exact: integers), c log c, empty bins.
  const auto u = static_cast<size_t>(used);
  std::vector<double> mass_before(u + 1, 0.0), clogc_before(u + 1, 0.0), zeros_before(u + 1, 0.0);
  for (size_t j = 0; j < u; ++j) {
    const double c = counts[j];
    mass_before[j + 1] = mass_before[j] + c;
    clogc_before[j + 1] = clogc_before[j] + (c > 0.0 ? c * std::log(c) : 0.0);
    zeros_before[j + 1] = zeros_before[j] + (c > 0.0 ? 0.0 : 1.0);
  }
  const double total = mass_before[u], log_total = std::log(total);
  std::vector<double> kl;
  for (Index i = levels; i <= used; ++i) {
    const auto n = static_cast<size_t>(i);
    const double kept = mass_before[n], outside = total - kept;
    if (kept == 0.0) {
      kl.push_back(std::numeric_limits<double>::infinity());
      continue;
    }
    const double log_kept = std::log(kept);
    // Sum over non-empty bins of p (log p - log q) with p = c / total, q = group mean / kept.
    double sum = 0.0, last_q = 0.0;
    for (Index g = 0; g < levels; ++g) {
      const auto b0 = static_cast<size_t>(g * i / levels);
      const auto b1 = static_cast<size_t>((g + 1) * i / levels);
      const double mass = mass_before[b1] - mass_before[b0];
      if (mass == 0.0) continue;
      const double c_log_c = clogc_before[b1] - clogc_before[b0];
      const double nonempty = static_cast<double>(b1 - b0) - (zeros_before[b1] - zeros_before[b0]);
      const double log_q = std::log(mass / nonempty) - log_kept;
      sum += (c_log_c - mass * log_total - mass * log_q) / total;
      if (b1 == n) last_q = std::exp(log_q);
    }
    // Bin i - 1 also holds the folded mass: replace its term.
    const double c_last = counts[n - 1];
    const double p_last = (c_last + outside) / total;
    if (c_last > 0.0) sum -= c_last / total * std::log(c_last / total / last_q);
    if (p_last > 0.0) sum += p_last * std::log(p_last / (c_last > 0.0 ? last_q : eps));
    // Smoothing: entries that are zero in P (and Q) become eps, then both are renormalised.
    const double zeros_q = zeros_before[n];
    const double zeros_p = zeros_q - (c_last == 0.0 && outside > 0.0 ? 1.0 : 0.0);
    const double z_p = 1.0 + eps * zeros_p, z_q = 1.0 + eps * zeros_q;
    kl.push_back(sum / z_p + std::log(z_q / z_p));
  }
  return kl;
}

/// The entropy calibration threshold of a histogram of |x|: the candidate i with the least KL
/// divergence (the first on ties) gives i * bin width, the upper edge of the kept bins.
/// A histogram whose non-empty bins all lie within the first `levels` is not clipped.
inline double kl_threshold(const Histogram& h, int levels) {
  const auto& counts = h.counts();
  Index used = static_cast<Index>(counts.size());
  while (used > 1 && counts[static_cast<size_t>(used - 1)] == 0.0) --used;
  if (used <= levels) return h.edge(static_cast<double>(used));
  const auto kl = kl_divergences(counts, used, levels);
  const auto best = std::min_element(kl.begin(), kl.end()) - kl.begin();
  return h.edge(static_cast<double>(levels + best));
}

}  // namespace detail

/// TensorRT's entropy calibrator: a histogram of |x| per block (default 2048 bins from 0, merged
/// as the range grows) and the clipping threshold t with the least KL divergence between the
/// clipped distribution and its quantized version; the range is [-t, t] within the observed
/// [min, max]. The quantized distribution has 2^(bits-1) levels (128 at INT8, as TensorRT), or
/// 2^bits for an asymmetric scheme on one-signed data. Cost per block: about bins x levels.
class EntropyObserver : public detail::HistogramObserver {
 public:
  explicit EntropyObserver(Scheme scheme, Axis axis = Axis::rows, int bins = default_histogram_bins)
      : HistogramObserver(scheme, axis, bins, true) {}

 protected:
  Ranges compute_ranges() const override {
    Ranges r{min_, max_};
    for (size_t i = 0; i < min_.size(); ++i) {
      const bool one_signed = min_[i] >= 0.0f || max_[i] <= 0.0f;
      const int levels = 1 << (scheme().bits - (scheme().symmetric || !one_signed ? 1 : 0));
      const auto t =
          static_cast<float>(detail::kl_threshold(histogram(static_cast<Index>(i)), levels));
      r.min[i] = std::max(min_[i], -t);
      r.max[i] = std::max(r.min[i], std::min(max_[i], t));
    }
    return r;
  }
};

}  // namespace lowbit::calib
