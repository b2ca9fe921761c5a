// percentile_observer.hpp: clipping ranges at a percentile of the observed values (histogram).
#pragma once

#include <algorithm>
#include <cmath>
#include <lowbit/calib/histogram.hpp>

namespace lowbit::calib {

/// Clips each block at a percentile of its values, estimated from a bounded histogram (linear
/// interpolation inside a bin, so within one bin width of the exact percentile).
/// Symmetric schemes: the `percentile`-th percentile t of |x| gives the range [-t, t].
/// Asymmetric schemes (two-sided): (100 - percentile) / 2 percent is cut from each tail.
/// Ranges never exceed the observed [min, max].
class PercentileObserver : public detail::HistogramObserver {
 public:
  /// percentile in (0, 100]; 100 gives the observed min/max.
  explicit PercentileObserver(Scheme scheme, double percentile = 99.99, Axis axis = Axis::rows,
                              int bins = default_histogram_bins)
      : HistogramObserver(scheme, axis, bins, scheme.symmetric), percentile_(percentile) {
    lowbit::detail::require(std::isfinite(percentile) && percentile > 0.0 && percentile <= 100.0,
                            "percentile: expected a value in (0, 100], got {}", percentile);
  }

  double percentile() const { return percentile_; }

 protected:
  Ranges compute_ranges() const override {
    Ranges r{min_, max_};
    if (percentile_ == 100.0) return r;
    for (size_t i = 0; i < min_.size(); ++i) {
      const auto& h = histogram(static_cast<Index>(i));
      if (scheme().symmetric) {
        const double t = h.quantile(percentile_ / 100.0);
        r.min[i] = std::max(min_[i], static_cast<float>(-t));
        // One-signed data whose t rounds below its smallest magnitude: keep min <= max.
        r.max[i] = std::max(r.min[i], std::min(max_[i], static_cast<float>(t)));
      } else {
        const double tail = (100.0 - percentile_) / 200.0;
        r.min[i] = std::clamp(static_cast<float>(h.quantile(tail)), min_[i], max_[i]);
        r.max[i] = std::clamp(static_cast<float>(h.quantile(1.0 - tail)), r.min[i], max_[i]);
      }
    }
    return r;
  }

 private:
  double percentile_;
};

}  // namespace lowbit::calib
