// minmax_observer.hpp: running min/max observer (torch.ao.quantization.MinMaxObserver semantics).
#pragma once

#include <lowbit/calib/observer.hpp>

#include <algorithm>

namespace lowbit::calib {

/// Tracks the running minimum and maximum of every parameter block over all batches and turns
/// them into parameters by core's rule, giving the results of PyTorch's MinMaxObserver (per
/// tensor) and PerChannelMinMaxObserver (per channel: ch_axis 0 is Axis::rows, ch_axis 1 of an
/// activation batch is Axis::columns).
class MinMaxObserver : public Observer {
 public:
  explicit MinMaxObserver(Scheme scheme, Axis axis = Axis::rows) : Observer(scheme, axis) {}

 protected:
  void accumulate(const Eigen::Ref<const MatrixXfR>&, const std::vector<float>& mins,
                  const std::vector<float>& maxs) override {
    if (min_.empty()) {
      min_ = mins;
      max_ = maxs;
      return;
    }
    for (size_t i = 0; i < min_.size(); ++i) {
      min_[i] = std::min(min_[i], mins[i]);
      max_[i] = std::max(max_[i], maxs[i]);
    }
  }
  Ranges compute_ranges() const override { return {min_, max_}; }
};

}  // namespace lowbit::calib
