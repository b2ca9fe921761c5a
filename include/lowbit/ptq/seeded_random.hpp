// seeded_random.hpp: a tiny seeded generator (splitmix64) with uniform and Box-Muller Gaussian draws.
#pragma once

#include <cmath>
#include <cstdint>

namespace lowbit::ptq {

/// A seeded stream of random numbers that is the same on every platform: splitmix64 integers
/// (Steele, Lea and Flood 2014, as in Vigna's reference code), uniform doubles from their top 53
/// bits, and Gaussians by Box-Muller (std::normal_distribution's output is implementation-defined,
/// this is not). The integers and uniforms are exact everywhere; a Gaussian uses std::log, std::cos
/// and std::sin in double, which correctly rounded libms (glibc, musl, macOS) agree on.
class SeededRandom {
 public:
  explicit SeededRandom(uint64_t seed) noexcept : state_(seed) {}

  /// The next 64 random bits.
  uint64_t next_u64() noexcept {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in (0, 1]: (top 53 bits + 1) · 2⁻⁵³.
  double uniform() noexcept { return double((next_u64() >> 11) + 1) * 0x1.0p-53; }
  /// ±1 with equal probability (the top bit).
  double sign() noexcept { return (next_u64() >> 63) != 0 ? -1.0 : 1.0; }
  /// Standard normal: Box-Muller on two uniforms u1, u2 gives sqrt(−2 ln u1)·cos(2π u2), returned
  /// first, and sqrt(−2 ln u1)·sin(2π u2), returned by the next call.
  double gaussian() noexcept {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = uniform(), u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double t = 6.283185307179586476925 * u2;
    spare_ = r * std::sin(t);
    has_spare_ = true;
    return r * std::cos(t);
  }

 private:
  uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

/// An independent seed for sub-stream `stream` of `seed` (e.g. one per attention head).
inline uint64_t derive_seed(uint64_t seed, uint64_t stream) noexcept {
  SeededRandom r(seed ^ (0xd1b54a32d192ed03ull * (stream + 1)));
  return r.next_u64();
}

}  // namespace lowbit::ptq
