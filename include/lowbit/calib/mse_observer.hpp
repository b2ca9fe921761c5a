// mse_observer.hpp: clipping ranges minimising the expected quantization MSE (histogram search).
#pragma once

#include <algorithm>
#include <cmath>
#include <lowbit/calib/histogram.hpp>
#include <utility>

namespace lowbit::calib {
namespace detail {

/// Integral of (t - round(t))^2 from -1/2 to y: 1/12 per whole period plus the partial one.
inline double rounding_error_integral(double y) {
  const double u = y + 0.5;
  const double periods = std::floor(u);
  const double f = u - periods - 0.5;  // position inside the last period, in [-1/2, 1/2)
  return periods / 12.0 + (f * f * f + 0.125) / 3.0;
}

/// Expected squared error of quantizing the histogram's values with the parameters core
/// derives from [lo, hi], each bin's count taken as uniform over the bin. Exact for that model:
/// clipped parts integrate (x - edge)^2, the rest integrates the rounding error on the grid.
inline double expected_quant_error(const Histogram& h, float lo, float hi, const Scheme& s) {
  const AffineParams p = lowbit::detail::params_from_range_unchecked(lo, hi, s, 1.0f);
  const double step = p.scale;
  const double vmin = static_cast<double>(s.qmin() - p.zero_point) * step;
  const double vmax = static_cast<double>(s.qmax() - p.zero_point) * step;
  const auto cube = [](double v) { return v * v * v; };
  const auto& counts = h.counts();
  double err = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] == 0.0) continue;
    const double a = h.edge(static_cast<double>(i)), b = h.edge(static_cast<double>(i) + 1.0);
    double e = 0.0;
    if (a < vmin) e += (cube(std::min(b, vmin) - vmin) - cube(a - vmin)) / 3.0;
    if (b > vmax) e += (cube(b - vmax) - cube(std::max(a, vmax) - vmax)) / 3.0;
    const double l = std::max(a, vmin), r = std::min(b, vmax);
    if (r > l)
      e += cube(step) * (rounding_error_integral(r / step) - rounding_error_integral(l / step));
    err += counts[i] * e / (b - a);
  }
  return err / h.total();
}

/// Minimises f(u) over u in (0, 1]: a grid of 64 steps, then 32 finer steps around the best.
/// u = 1 is tried first and kept on ties. Returns {u, f(u)}.
template <class F>
std::pair<double, double> best_factor(F&& f) {
  constexpr int coarse = 64, fine = 32;
  double best_u = 1.0, best = f(1.0);
  for (int k = 1; k < coarse; ++k) {
    const double u = static_cast<double>(k) / coarse, e = f(u);
    if (e < best) {
      best = e;
      best_u = u;
    }
  }
  const double centre = best_u;
  for (int k = -fine / 2; k <= fine / 2; ++k) {
    const double u = centre + static_cast<double>(k) / (coarse * fine / 2);
    if (u <= 0.0 || u > 1.0 || k == 0) continue;
    const double e = f(u);
    if (e < best) {
      best = e;
      best_u = u;
    }
  }
  return {best_u, best};
}

}  // namespace detail

/// Chooses each block's clipping range to minimise the expected quantization MSE under the
/// observer's scheme, computed from a histogram of x (default 2048 bins, merged as the range
/// grows) with each bin's values taken as uniform. The search first scales the observed
/// [min, max] by a common factor (a gamma search); asymmetric schemes then refine each end on
/// its own (two rounds of coordinate descent). The observed [min, max] is always a candidate,
/// so the expected error is never above MinMaxObserver's.
class MseObserver : public detail::HistogramObserver {
 public:
  explicit MseObserver(Scheme scheme, Axis axis = Axis::rows, int bins = default_histogram_bins)
      : HistogramObserver(scheme, axis, bins, false) {}

  /// Expected MSE of block i's histogram when quantized over [lo, hi] (after observing).
  double expected_error(Index block, float lo, float hi) const {
    lowbit::detail::require(has_observations(),
                            "observer: expected_error before any observe(batch)");
    lowbit::detail::require(block >= 0 && block < blocks(), "block: expected 0..{}, got {}",
                            blocks() - 1, block);
    lowbit::detail::require(std::isfinite(lo) && std::isfinite(hi) && lo <= hi,
                            "lo/hi: expected finite lo <= hi, got [{}, {}]", lo, hi);
    return detail::expected_quant_error(histogram(block), lo, hi, scheme());
  }

 protected:
  Ranges compute_ranges() const override {
    Ranges r{min_, max_};
    for (size_t i = 0; i < min_.size(); ++i) {
      const auto& h = histogram(static_cast<Index>(i));
      const float mn = min_[i], mx = max_[i];
      const auto err = [&](float lo, float hi) {
        return detail::expected_quant_error(h, lo, hi, scheme());
      };
      const auto [g, g_err] = detail::best_factor(
          [&](double u) { return err(static_cast<float>(u * mn), static_cast<float>(u * mx)); });
      float lo = static_cast<float>(g * mn), hi = static_cast<float>(g * mx);
      double best = g_err;
      // Each end alone; a move is kept only when it lowers the error.
      for (int round = 0; round < 2 && !scheme().symmetric; ++round) {
        if (mn < 0.0f) {
          const auto [u, e] =
              detail::best_factor([&](double v) { return err(static_cast<float>(v * mn), hi); });
          if (e < best) {
            best = e;
            lo = static_cast<float>(u * mn);
          }
        }
        if (mx > 0.0f) {
          const auto [u, e] =
              detail::best_factor([&](double v) { return err(lo, static_cast<float>(v * mx)); });
          if (e < best) {
            best = e;
            hi = static_cast<float>(u * mx);
          }
        }
      }
      r.min[i] = lo;
      r.max[i] = hi;
    }
    return r;
  }
};

}  // namespace lowbit::calib
