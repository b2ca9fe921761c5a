// budget.hpp: a model-size budget as average bits per weight or as total stored bytes.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>

#include <cmath>
#include <cstddef>

namespace lowbit::mixed {

/// How much the allocated layers may store, counting every byte (codes, scales, zero points,
/// float layers at 4 bytes a weight).
class Budget {
 public:
  /// Average stored bits per weight, overhead included: floor(bits * weights / 8) bytes.
  static Budget bits_per_weight(double bits) {
    lowbit::detail::require(std::isfinite(bits) && bits > 0.0,
                    "budget bits per weight: expected a finite value > 0, got {}", bits);
    return Budget(bits, 0, false);
  }
  /// Total stored bytes.
  static Budget bytes(size_t n) {
    lowbit::detail::require(n > 0, "budget bytes: expected > 0, got {}", n);
    return Budget(0.0, n, true);
  }

  /// The budget in bytes for layers holding `total_weights` weights.
  size_t to_bytes(Index total_weights) const {
    if (in_bytes_) return bytes_;
    return static_cast<size_t>(std::floor(bits_ * double(total_weights) / 8.0));
  }

  bool in_bytes() const { return in_bytes_; }

 private:
  Budget(double bits, size_t bytes, bool in_bytes) : bits_(bits), bytes_(bytes), in_bytes_(in_bytes) {}
  double bits_;
  size_t bytes_;
  bool in_bytes_;
};

}  // namespace lowbit::mixed
