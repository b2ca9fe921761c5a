// block.hpp: what every GGUF block codec shares: stored parameters, effective sub-block parameters,
// the one decode expression, and exact nearest-code rounding on a format's grid.
#pragma once

#include <lowbit/core/half.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

namespace lowbit::formats {

/// Stored parameters of one block exactly as the format keeps them.
struct BlockParams {
  uint16_t d = 0;  ///< fp16 bits: the (super-)block scale
  uint16_t m = 0;  ///< fp16 bits: Q4_1/Q5_1 min; Q2_K/Q4_K/Q5_K dmin; else 0
  /// K-quants: sub-block scales as decode uses them (Q2_K 0..15, Q3_K -32..31 (stored - 32),
  /// Q4_K/Q5_K 0..63, Q6_K -128..127); 0 for the legacy formats and unused entries.
  std::array<int16_t, 16> scales{};
  /// K-quants with mins: Q2_K 0..15, Q4_K/Q5_K 0..63; else 0.
  std::array<int16_t, 16> mins{};
};

inline bool operator==(const BlockParams& a, const BlockParams& b) noexcept {
  return a.d == b.d && a.m == b.m && a.scales == b.scales && a.mins == b.mins;
}
inline bool operator!=(const BlockParams& a, const BlockParams& b) noexcept { return !(a == b); }

/// Effective float parameters of one sub-block: decode gives x = scale*q (+ offset), q in
/// [qmin, qmax]. For the K-quants with mins, offset = -(dmin * min) (the negation is exact).
struct SubBlockParams {
  float scale = 0;
  float offset = 0;
};

namespace detail {

/// Makes the compiler round `v` here: it cannot fuse the operation that produced `v` with the one
/// that uses it (a*b+c -> fma, which GCC does whenever FMA is enabled). The codecs' own products
/// (fp16 times a small integer, twice at most) are exact in float, so their decode is the same
/// fused or not; this matters for float parameters of any precision (decode_value, the search)
/// and keeps lowbit's rounding the same under every compiler flag.
template <class T>
inline void round_here(T& v) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__)))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile T t = v;
  v = t;
#endif
}

inline uint16_t load_u16(const uint8_t* p) noexcept { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t load_u32(const uint8_t* p) noexcept {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
inline void store_u16(uint8_t* p, uint16_t v) noexcept {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}
inline void store_u32(uint8_t* p, uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

}  // namespace detail

/// The value code `q` stands for: `scale * q` rounded, plus `offset` (rounded again) when the
/// format has offsets. Every codec's decode computes exactly this, so it is the grid algorithms
/// choose codes on.
inline float decode_value(const SubBlockParams& s, int q, bool has_offset) noexcept {
  float v = s.scale * float(q);
  if (!has_offset) return v;
  detail::round_here(v);
  return v + s.offset;
}

namespace detail {

/// The sign of (a - b) - (c - d), exactly: each difference of two doubles is split into its rounded
/// value and the exact rounding error (Knuth's two-sum), and the pairs are compared in order.
inline int exact_compare(double a, double b, double c, double d) noexcept {
  auto two_sum = [](double x, double y, double& err) {
    const double s = x + y, yy = s - x;
    err = (x - (s - yy)) + (y - yy);
    return s;
  };
  double e1, e2;
  const double s1 = two_sum(a, -b, e1), s2 = two_sum(c, -d, e2);
  if (s1 != s2) return s1 < s2 ? -1 : 1;
  return e1 < e2 ? -1 : (e1 > e2 ? 1 : 0);
}

/// The codes of a format: the integers qmin..qmax, or for a non-uniform grid (IQ4_NL, IQ4_XS) the
/// n ascending values levels[0..n).
struct CodeSet {
  int qmin = 0, qmax = 0;
  const int8_t* levels = nullptr;
  int n_levels = 0;

  int size() const noexcept { return levels ? n_levels : qmax - qmin + 1; }
  int at(int k) const noexcept { return levels ? levels[k] : qmin + k; }
};

/// Rounds values to the code of `set` whose decode_value is nearest (exactly, in the decode's own
/// float arithmetic); between two equally near values the code of even index in `set` wins (for
/// the uniform formats, whose qmin is even, the even code). A zero or NaN scale makes every code
/// decode alike: the result is the code nearest 0. Built once per sub-block; `uses` (how many
/// values it will round) decides whether tabulating every code's value first pays.
class NearestCode {
 public:
  NearestCode(const SubBlockParams& s, const CodeSet& set, bool has_offset, int uses = 1) noexcept
      : s_(s), set_(set), has_offset_(has_offset), n_(set.size()) {
    flat_ = !(s.scale > 0) && !(s.scale < 0);
    if (flat_) {
      int best = 0;
      for (int k = 1; k < n_; ++k)
        if (std::abs(set.at(k)) < std::abs(set.at(best))) best = k;
      flat_code_ = set.at(best);
      return;
    }
    // k = 0..n-1 walks the codes in the direction of growing values: index(k) is the position
    // in `set` (ascending codes), so index(k) = k for a positive scale, n - 1 - k otherwise.
    up_ = s.scale > 0;
    index_base_ = up_ ? 0 : n_ - 1;
    index_step_ = up_ ? 1 : -1;
    inv_ = 1.0f / s.scale;
    tabulated_ = n_ <= kMaxTable && n_ <= 2 * uses;
    if (tabulated_)
      for (int k = 0; k < n_; ++k) table_[k] = compute(k);
  }

  int operator()(float x) const noexcept {
    if (flat_) return flat_code_;
    // decode_value is monotone in the code (rounding is monotone), so w(k) is nondecreasing:
    // find the boundary, the first k with w(k) >= x; the nearest code is beside it.
    if (!set_.levels) {
      // A guess from float arithmetic, checked exactly (binary search when it is not beside the
      // boundary). Written without data-dependent branches: half the values lie above their
      // nearest code and half below, which no branch predictor guesses.
      float t = (has_offset_ ? x - s_.offset : x) * inv_;
      const float hi = float(set_.qmax), lo = float(set_.qmin);
      t = t < hi ? t : hi;  // (minss/maxss; NaN becomes qmax)
      t = t > lo ? t : lo;
      const float r = (t + 12582912.0f) - 12582912.0f;  // 1.5 * 2^23: rounds to an integer
      const int k0 = index(int(r) - set_.qmin);
      const int km = k0 > 0 ? k0 - 1 : 0, kp = k0 < n_ - 1 ? k0 + 1 : n_ - 1;
      const float near[3] = {w(km), w(k0), w(kp)};
      const int ge = near[1] >= x;  // the boundary is k0 (ge) or k0 + 1
      const int first = k0 + 1 - ge;
      const float below = near[1 - ge], above = near[2 - ge];
      if ((first > 0) & (first < n_) & (below < x) & (above >= x))
        return decide(x, first, below, above);
    }
    int lo = 0, hi = n_;  // invariant: w(k) < x for k < lo, w(k) >= x for k >= hi
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (w(mid) >= x)
        hi = mid;
      else
        lo = mid + 1;
    }
    if (lo == n_) return code(n_ - 1);
    if (lo == 0) return code(0);
    return decide(x, lo, w(lo - 1), w(lo));
  }

 private:
  static constexpr int kMaxTable = 64;

  int index(int k) const noexcept { return index_base_ + index_step_ * k; }
  int code(int k) const noexcept { return set_.at(index(k)); }
  float compute(int k) const noexcept { return decode_value(s_, code(k), has_offset_); }
  float w(int k) const noexcept { return tabulated_ ? table_[k] : compute(k); }

  // Every k < first decodes below x (the largest: `below`) and every k >= first at or above it
  // (the smallest: `above`): the nearest is one of the two, their distances compared exactly.
  int decide(float x, int first, float below, float above) const noexcept {
    // In double the two distances are within a relative 2^-53 of exact: a clear difference
    // decides at once, only near-ties need the exact comparison.
    const double db = double(x) - double(below), da = double(above) - double(x);
    int k = first - int(db < da);
    if (!(std::fabs(db - da) > (db + da) * 0x1p-40)) {  // rare: (nearly) a tie
      const int c = exact_compare(double(x), double(below), double(above), double(x));
      k = c < 0 ? first - 1 : (c > 0 ? first : ((index(first) & 1) ? first - 1 : first));
    }
    return code(k);
  }

  SubBlockParams s_;
  CodeSet set_;
  bool has_offset_;
  int n_;
  bool up_ = true, flat_ = false, tabulated_ = false;
  int flat_code_ = 0, index_base_ = 0, index_step_ = 1;
  float inv_ = 0;
  float table_[kMaxTable];
};

/// The code of `set` nearest to `x` under `s` (NearestCode for a single value).
inline int nearest_code(float x, const SubBlockParams& s, const CodeSet& set,
                        bool has_offset) noexcept {
  return NearestCode(s, set, has_offset)(x);
}

/// nearest_code over the integers qmin..qmax.
inline int nearest_code(float x, const SubBlockParams& s, int qmin, int qmax,
                        bool has_offset) noexcept {
  return nearest_code(x, s, CodeSet{qmin, qmax, nullptr, 0}, has_offset);
}

/// A codec's code set: F::levels (a non-uniform grid) when it has one, else F::qmin..F::qmax.
template <class F, class = void>
struct has_levels : std::false_type {};
template <class F>
struct has_levels<F, std::void_t<decltype(F::levels)>> : std::true_type {};

template <class F>
constexpr CodeSet code_set() noexcept {
  if constexpr (has_levels<F>::value)
    return CodeSet{F::qmin, F::qmax, F::levels, int(sizeof(F::levels))};
  else
    return CodeSet{F::qmin, F::qmax, nullptr, 0};
}

/// The nearest finite fp16 to `x`: ties to even, saturating at ±65504 instead of overflowing to
/// inf; NaN gives 0. This is how every format's fp16 scales and mins are fitted.
inline uint16_t fit_half(float x) noexcept {
  if (!(x == x)) return 0;
  const uint16_t h = float_to_half(x);
  return (h & 0x7FFFu) == 0x7C00u ? uint16_t((h & 0x8000u) | 0x7BFFu) : h;
}

/// The integer k in [lo, hi] for which float(unit) * k is nearest `target` (exact, ties to the
/// even k); 0 (clamped) when unit is zero or `target` NaN. Sub-block scales and mins are fitted
/// with it relative to their fp16 super-block values.
inline int nearest_multiple(float target, float unit, int lo, int hi) noexcept {
  if (!(target == target)) return lo > 0 ? lo : (hi < 0 ? hi : 0);
  return nearest_code(target, SubBlockParams{unit, 0.0f}, lo, hi, false);
}

}  // namespace detail
}  // namespace lowbit::formats
