// make_observer.hpp: choose a calibrator by name at run time (e.g. from a command-line option).
#pragma once

#include <lowbit/calib/entropy_observer.hpp>
#include <lowbit/calib/minmax_observer.hpp>
#include <lowbit/calib/moving_average_observer.hpp>
#include <lowbit/calib/mse_observer.hpp>
#include <lowbit/calib/percentile_observer.hpp>
#include <memory>
#include <string_view>

namespace lowbit::calib {

/// The names make_observer() accepts.
inline constexpr std::string_view observer_names[] = {"minmax", "moving_average", "percentile",
                                                      "mse", "entropy"};

/// A new observer of the named kind with its default options ("percentile" is 99.99).
/// Throws lowbit::Error for an unknown name or a bad scheme/axis.
inline std::unique_ptr<Observer> make_observer(std::string_view name, const Scheme& scheme,
                                               Axis axis = Axis::rows) {
  if (name == "minmax") return std::make_unique<MinMaxObserver>(scheme, axis);
  if (name == "moving_average")
    return std::make_unique<MovingAverageMinMaxObserver>(scheme, 0.01f, axis);
  if (name == "percentile") return std::make_unique<PercentileObserver>(scheme, 99.99, axis);
  if (name == "mse") return std::make_unique<MseObserver>(scheme, axis);
  if (name == "entropy") return std::make_unique<EntropyObserver>(scheme, axis);
  lowbit::detail::fail(
      "observer name: expected minmax, moving_average, percentile, mse or entropy, got '{}'", name);
}

}  // namespace lowbit::calib
