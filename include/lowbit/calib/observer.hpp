// observer.hpp: the streaming observer interface: batches in, per-block ranges and QuantParams out.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>

#include <cstddef>
#include <vector>

namespace lowbit::calib {

/// Which dimension of a batch holds the channels of a per-channel scheme.
/// `rows`: one parameter pair per row, as everywhere in lowbit (weights [out, in]); per-group
/// schemes split each row into groups. `columns`: one pair per column, for activation batches
/// [tokens, features]; the resulting QuantParams then describe the transposed batch
/// [features, tokens] (quantize `batch.transpose()` with them). Per-tensor schemes ignore it.
enum class Axis { rows, columns };

/// Clipping ranges, one [min, max] per parameter block in param_index() order.
struct Ranges {
  std::vector<float> min;
  std::vector<float> max;
};

/// A streaming observer: call observe() on any number of batches (row-major, rows = tokens or
/// samples, columns = features), then params() for the observer's scheme. Memory stays bounded
/// whatever the number of batches. Each batch must be non-empty and finite and have the width
/// of the first one (and its row count too when the channels are rows). Derived classes only
/// decide how batches update their state and which range each block gets.
class Observer {
 public:
  virtual ~Observer() = default;

  /// Adds one batch; throws lowbit::Error (leaving the state untouched) on an empty batch,
  /// NaN/Inf, or a shape that disagrees with the first batch.
  void observe(const Eigen::Ref<const MatrixXfR>& batch) {
    lowbit::detail::require(batch.size() > 0, "batch: expected a non-empty matrix, got {}x{}",
                    batch.rows(), batch.cols());
    if (batches_ > 0) {
      lowbit::detail::require(batch.cols() == cols_,
                      "batch: expected {} columns (as the first batch), got {}", cols_,
                      batch.cols());
      lowbit::detail::require(!rows_fixed() || batch.rows() == rows_,
                      "batch: expected {} rows (one per channel, as the first batch), got {}",
                      rows_, batch.rows());
    }
    lowbit::detail::require_finite(batch, "batch");
    std::vector<float> mins, maxs;
    if (transposes()) {
      const MatrixXfR t = batch.transpose();
      block_ranges(t, scheme_, mins, maxs);
      accumulate(t, mins, maxs);
    } else {
      block_ranges(batch, scheme_, mins, maxs);
      accumulate(batch, mins, maxs);
    }
    if (batches_ == 0) {
      rows_ = batch.rows();
      cols_ = batch.cols();
    }
    ++batches_;
  }

  /// The range each parameter block would be quantized over (before any gamma).
  /// Throws lowbit::Error before the first observation.
  Ranges ranges() const {
    require_observed();
    return compute_ranges();
  }

  /// QuantParams from ranges() by core's rule (params_from_ranges), with the clipping factor
  /// gamma applied to every block. Throws lowbit::Error before the first observation.
  QuantParams params(float gamma = 1.0f) const { return params(std::vector<float>{gamma}); }

  /// As above with one clipping factor per block (or a single one for all).
  QuantParams params(const std::vector<float>& gammas) const {
    const Ranges r = ranges();
    return params_from_ranges(r.min, r.max, scheme_, gammas);
  }

  /// Whether at least one batch has been observed since construction or reset().
  bool has_observations() const { return batches_ > 0; }
  /// Number of batches observed.
  Index batches() const { return batches_; }
  /// Number of parameter blocks (1 per tensor, channels, or rows x groups); 0 before observing.
  Index blocks() const { return static_cast<Index>(min_.size()); }
  /// Running per-block minimum and maximum (MovingAverageMinMaxObserver: the averaged ones);
  /// empty before the first observation.
  const std::vector<float>& min_vals() const { return min_; }
  const std::vector<float>& max_vals() const { return max_; }

  /// Forgets every observation (scheme and options stay).
  void reset() {
    min_.clear();
    max_.clear();
    rows_ = cols_ = batches_ = 0;
    clear();
  }

  const Scheme& scheme() const { return scheme_; }
  Axis axis() const { return axis_; }

  /// Bytes of observation state held (independent of the number of batches).
  virtual std::size_t memory_bytes() const { return (min_.capacity() + max_.capacity()) * sizeof(float); }

 protected:
  Observer(const Scheme& scheme, Axis axis) : scheme_(scheme), axis_(axis) {
    validate(scheme);
    lowbit::detail::require(axis == Axis::rows || axis == Axis::columns, "axis: not an Axis value");
    lowbit::detail::require(axis == Axis::rows || scheme.granularity != Granularity::per_group,
                    "axis: per_group schemes group along rows; Axis::columns is not supported");
  }
  Observer(const Observer&) = default;
  Observer& operator=(const Observer&) = default;
  Observer(Observer&&) = default;
  Observer& operator=(Observer&&) = default;

  /// Updates the state with a validated batch (oriented so that channels are rows) and its
  /// per-block ranges. min_/max_ are empty on the first call.
  virtual void accumulate(const Eigen::Ref<const MatrixXfR>& x, const std::vector<float>& mins,
                          const std::vector<float>& maxs) = 0;
  /// Per-block ranges; called only after at least one observation.
  virtual Ranges compute_ranges() const = 0;
  /// Drops derived state on reset().
  virtual void clear() {}

  std::vector<float> min_, max_;

 private:
  bool transposes() const {
    return axis_ == Axis::columns && scheme_.granularity != Granularity::per_tensor;
  }
  bool rows_fixed() const {
    return axis_ == Axis::rows && scheme_.granularity != Granularity::per_tensor;
  }
  void require_observed() const {
    lowbit::detail::require(batches_ > 0, "observer: params/ranges requested before any observe(batch)");
  }

  Scheme scheme_;
  Axis axis_;
  Index rows_ = 0, cols_ = 0, batches_ = 0;
};

}  // namespace lowbit::calib
