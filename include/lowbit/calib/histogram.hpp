// histogram.hpp: bounded histograms that grow by exact bin merging, and the observer base on them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <lowbit/calib/observer.hpp>
#include <vector>

namespace lowbit::calib {

/// How many bins a histogram observer keeps per parameter block unless told otherwise.
inline constexpr int default_histogram_bins = 2048;

namespace detail {

/// A fixed number of equal bins over [lo, lo + bins * width). When values fall outside, the bin
/// width doubles (as often as needed) on a lattice aligned with the old edges, so old counts
/// merge exactly into new bins and memory never grows. At least about half the bins then still
/// cover the observed values. A magnitude histogram (of |x|) stays anchored at 0.
class Histogram {
 public:
  Histogram(int bins, bool anchored_at_zero)
      : counts_(static_cast<size_t>(bins), 0.0), anchored_(anchored_at_zero) {}

  /// Makes the histogram cover [a, b] (finite, a <= b; a >= 0 when anchored).
  void cover(double a, double b) {
    const auto n = static_cast<double>(counts_.size());
    if (anchored_) a = 0.0;
    if (width_ == 0.0) {  // first values: bins span exactly [a, b]
      const double floor_width = std::max({std::abs(a), std::abs(b), 1e-30}) * 1e-7 / n;
      width_ = std::max((b - a) / n, floor_width);
      lo_ = (b - a >= floor_width * n || anchored_) ? a : a - 0.5 * n * width_;  // centre a point
      return;
    }
    if (a >= lo_ && b <= hi()) return;
    // Smallest k such that bins of width w * 2^k, with edges on the old lattice, cover both
    // the old span and [a, b]: m new bins below the old origin, the rest above.
    int k = 0;
    double w = width_, m = 0.0;
    for (;;) {
      ++k;
      w *= 2.0;
      m = anchored_ ? 0.0 : std::max(0.0, std::ceil((lo_ - a) / w));
      const double above = std::max(std::ceil((b - lo_) / w), std::ceil(std::ldexp(n, -k)));
      if (m + above <= n) break;
    }
    std::vector<double> merged(counts_.size(), 0.0);
    for (size_t i = 0; i < counts_.size(); ++i)
      merged[static_cast<size_t>(m + std::floor(std::ldexp(static_cast<double>(i), -k)))] +=
          counts_[i];
    counts_.swap(merged);
    lo_ -= m * w;
    width_ = w;
  }

  /// Counts one value (values outside after rounding land in the edge bins).
  void add(double v) {
    const double pos = std::floor((v - lo_) / width_);
    const double last = static_cast<double>(counts_.size() - 1);
    counts_[static_cast<size_t>(std::clamp(pos, 0.0, last))] += 1.0;
    total_ += 1.0;
  }

  /// Value below which a fraction q in [0, 1] of the counts lies, interpolated linearly inside
  /// the bin that holds it.
  double quantile(double q) const {
    const double target = q * total_;
    double cum = 0.0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      if (counts_[i] > 0.0 && cum + counts_[i] >= target)
        return edge(static_cast<double>(i) + std::max(0.0, target - cum) / counts_[i]);
      cum += counts_[i];
    }
    return hi();
  }

  int bins() const { return static_cast<int>(counts_.size()); }
  const std::vector<double>& counts() const { return counts_; }
  double total() const { return total_; }
  double lo() const { return lo_; }
  double width() const { return width_; }
  double hi() const { return edge(static_cast<double>(counts_.size())); }
  /// Position of (fractional) bin edge i.
  double edge(double i) const { return lo_ + i * width_; }
  std::size_t memory_bytes() const { return counts_.capacity() * sizeof(double); }

 private:
  std::vector<double> counts_;
  double lo_ = 0.0, width_ = 0.0, total_ = 0.0;
  bool anchored_;
};

/// An observer keeping one Histogram per parameter block (of x, or of |x| for `magnitude`)
/// beside the exact running min/max. Derived classes turn the histograms into ranges.
class HistogramObserver : public Observer {
 public:
  /// Bins per block.
  int bins() const { return bins_; }
  /// The histogram of block i (valid after the first observation).
  const Histogram& histogram(Index i) const { return hists_[static_cast<size_t>(i)]; }

  std::size_t memory_bytes() const override {
    std::size_t bytes = Observer::memory_bytes() + hists_.capacity() * sizeof(Histogram);
    for (const auto& h : hists_) bytes += h.memory_bytes();
    return bytes;
  }

 protected:
  HistogramObserver(const Scheme& scheme, Axis axis, int bins, bool magnitude)
      : Observer(scheme, axis), bins_(bins), magnitude_(magnitude) {
    lowbit::detail::require(bins >= 16 && bins <= (1 << 20), "bins: expected 16..1048576, got {}",
                            bins);
  }

  void accumulate(const Eigen::Ref<const MatrixXfR>& x, const std::vector<float>& mins,
                  const std::vector<float>& maxs) override {
    if (initialise(mins, maxs)) hists_.assign(mins.size(), Histogram(bins_, magnitude_));
    for (size_t i = 0; i < mins.size(); ++i) {
      min_[i] = std::min(min_[i], mins[i]);
      max_[i] = std::max(max_[i], maxs[i]);
      const double a = mins[i], b = maxs[i];
      if (magnitude_)
        hists_[i].cover(0.0, std::max(std::abs(a), std::abs(b)));
      else
        hists_[i].cover(a, b);
    }
    lowbit::detail::for_each_block(scheme(), x.rows(), x.cols(),
                                   [&](Index p, Index r, Index c0, Index c1) {
                                     Histogram& h = hists_[static_cast<size_t>(p)];
                                     for (Index c = c0; c < c1; ++c)
                                       h.add(magnitude_ ? std::abs(x(r, c)) : x(r, c));
                                   });
  }

  void clear() override { hists_.clear(); }

 private:
  int bins_;
  bool magnitude_;
  std::vector<Histogram> hists_;
};

}  // namespace detail
}  // namespace lowbit::calib
