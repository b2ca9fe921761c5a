// moving_average_observer.hpp: exponential moving average of batch min/max (PyTorch's rule).
#pragma once

#include <lowbit/calib/observer.hpp>

#include <cmath>

namespace lowbit::calib {

/// PyTorch's MovingAverageMinMaxObserver / MovingAveragePerChannelMinMaxObserver: the first
/// batch sets min/max to its own; each later batch moves them by
/// `min += averaging_constant * (batch_min - min)` (likewise max), in float.
class MovingAverageMinMaxObserver : public Observer {
 public:
  /// averaging_constant in (0, 1]; 1 keeps only the latest batch.
  explicit MovingAverageMinMaxObserver(Scheme scheme, float averaging_constant = 0.01f,
                                       Axis axis = Axis::rows)
      : Observer(scheme, axis), c_(averaging_constant) {
    lowbit::detail::require(std::isfinite(averaging_constant) && averaging_constant > 0.0f &&
                        averaging_constant <= 1.0f,
                    "averaging_constant: expected a value in (0, 1], got {}", averaging_constant);
  }

  float averaging_constant() const { return c_; }

 protected:
  void accumulate(const Eigen::Ref<const MatrixXfR>&, const std::vector<float>& mins,
                  const std::vector<float>& maxs) override {
    if (min_.empty()) {
      min_ = mins;
      max_ = maxs;
      return;
    }
    for (size_t i = 0; i < min_.size(); ++i) {
      min_[i] = min_[i] + c_ * (mins[i] - min_[i]);
      max_[i] = max_[i] + c_ * (maxs[i] - max_[i]);
    }
  }
  Ranges compute_ranges() const override { return {min_, max_}; }

 private:
  float c_;
};

}  // namespace lowbit::calib
