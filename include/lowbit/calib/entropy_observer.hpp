// entropy_observer.hpp: TensorRT-style KL-divergence (entropy) calibration of a clipping threshold.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <lowbit/calib/histogram.hpp>
#include <vector>

namespace lowbit::calib {
namespace detail {

/// Normalises counts to probabilities, replaces zeros by eps and renormalises, so that KL
/// stays finite. Returns false for an all-zero vector.
inline bool smooth_distribution(std::vector<double>& d, double eps = 1e-4) {
  double sum = 0.0;
  for (double v : d) sum += v;
  if (sum == 0.0) return false;
  double smoothed = 0.0;
  for (double& v : d) smoothed += (v = v == 0.0 ? eps : v / sum);
  for (double& v : d) v /= smoothed;
  return true;
}

/// The TensorRT entropy calibration on a histogram of |x|: for every candidate i from `levels`
/// to the last non-empty bin, P is the first i bins with the mass beyond folded into bin i - 1,
/// Q is those i bins (without the folded mass) merged into `levels` groups of equal width and
/// spread back evenly over each group's non-empty bins; both are normalised and smoothed, and
/// the i with the least KL(P || Q) wins. Returns the threshold i * bin width (the upper edge of
/// the kept bins).
inline double kl_threshold(const Histogram& h, int levels) {
  const auto& counts = h.counts();
  Index used = static_cast<Index>(counts.size());
  while (used > 1 && counts[static_cast<size_t>(used - 1)] == 0.0) --used;
  if (used <= levels) return h.edge(static_cast<double>(used));
  std::vector<double> suffix(static_cast<size_t>(used) + 1, 0.0);  // mass in bins >= j
  for (Index j = used - 1; j >= 0; --j)
    suffix[static_cast<size_t>(j)] =
        suffix[static_cast<size_t>(j) + 1] + counts[static_cast<size_t>(j)];
  std::vector<double> p, q;
  double best_kl = std::numeric_limits<double>::infinity();
  Index best_i = used;
  for (Index i = levels; i <= used; ++i) {
    const auto n = static_cast<size_t>(i);
    p.assign(counts.begin(), counts.begin() + static_cast<std::ptrdiff_t>(n));
    p[n - 1] += suffix[n];
    q.assign(n, 0.0);
    for (Index g = 0; g < levels; ++g) {
      const auto b0 = static_cast<size_t>(g * i / levels),
                 b1 = static_cast<size_t>((g + 1) * i / levels);
      double mass = 0.0, nonzero = 0.0;
      for (size_t j = b0; j < b1; ++j)
        if (counts[j] > 0.0) {
          mass += counts[j];
          nonzero += 1.0;
        }
      for (size_t j = b0; j < b1; ++j)
        if (counts[j] > 0.0) q[j] = mass / nonzero;
    }
    if (!smooth_distribution(q)) continue;  // every kept bin empty
    smooth_distribution(p);
    double kl = 0.0;
    for (size_t j = 0; j < n; ++j) kl += p[j] * std::log(p[j] / q[j]);
    if (kl < best_kl) {
      best_kl = kl;
      best_i = i;
    }
  }
  return h.edge(static_cast<double>(best_i));
}

}  // namespace detail

/// TensorRT's entropy calibrator: a histogram of |x| per block (default 2048 bins from 0, merged
/// as the range grows) and the clipping threshold t with the least KL divergence between the
/// clipped distribution and its quantized version; the range is [-t, t] within the observed
/// [min, max]. The quantized distribution has 2^(bits-1) levels (128 at INT8, as TensorRT), or
/// 2^bits for an asymmetric scheme on one-signed data. Cost per block grows as bins^2 / 2.
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
