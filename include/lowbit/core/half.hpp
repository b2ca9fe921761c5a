// half.hpp: IEEE binary16 and bfloat16 <-> float, exact and portable (integer arithmetic only).
#pragma once

#include <cstdint>
#include <cstring>

namespace lowbit {

namespace detail::half_impl {

inline uint32_t float_bits(float x) noexcept {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

inline float bits_float(uint32_t b) noexcept {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

}  // namespace detail::half_impl

/// The nearest IEEE binary16 to `x`, ties to even, independent of the floating-point environment.
/// |x| >= 65520 becomes ±inf; results below 2^-14 are the correctly rounded subnormals (or ±0);
/// NaN becomes a quiet NaN with the sign and the top 9 payload bits kept (as F16C's vcvtps2ph).
inline uint16_t float_to_half(float x) noexcept {
  const uint32_t f = detail::half_impl::float_bits(x);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t a = f & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return uint16_t(sign | 0x7E00u | ((a >> 13) & 0x3FFu));  // NaN
  if (a >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // >= 65520 (or inf): rounds to inf
  if (a >= 0x38800000u) {                                 // >= 2^-14: a normal half
    uint32_t h = (a - (112u << 23)) >> 13;                // rebias the exponent, drop 13 bits
    const uint32_t rest = a & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry may bump the exponent
    return uint16_t(sign | h);
  }
  if (a <= 0x33000000u) return uint16_t(sign);  // <= 2^-25: rounds to zero (2^-25 is a tie to 0)
  // A subnormal half: the value in units of 2^-24, rounded. Float exponents 102..112 here.
  const uint32_t e = a >> 23;
  const uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (h & 1u))) ++h;  // 0x400 is the smallest normal: correct
  return uint16_t(sign | h);
}

/// The binary16 `h` as a float (exact: every half is a float). Subnormals, ±0 and ±inf are
/// exact; a NaN keeps its sign and payload and is made quiet (as F16C's vcvtph2ps and ggml do).
inline float half_to_float(uint16_t h) noexcept {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  uint32_t m = h & 0x3FFu;
  if (e == 0x1Fu)
    return detail::half_impl::bits_float(sign | 0x7F800000u | (m ? 0x400000u | m << 13 : 0u));
  if (e != 0) return detail::half_impl::bits_float(sign | ((e + 112u) << 23) | (m << 13));
  if (m == 0) return detail::half_impl::bits_float(sign);
  uint32_t exp = 113;  // subnormal: m * 2^-24; normalise m to 1.xxx
  while (!(m & 0x400u)) {
    m <<= 1;
    --exp;
  }
  return detail::half_impl::bits_float(sign | (exp << 23) | ((m & 0x3FFu) << 13));
}

/// The nearest bfloat16 to `x`, ties to even (overflow gives ±inf); NaN keeps its top bits and is
/// made quiet (bit 6 set), exactly as ggml's fp32 -> bf16.
inline uint16_t float_to_bf16(float x) noexcept {
  const uint32_t f = detail::half_impl::float_bits(x);
  if ((f & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((f >> 16) | 0x40u);
  return uint16_t((f + 0x7FFFu + ((f >> 16) & 1u)) >> 16);
}

/// The bfloat16 `h` as a float: its bits are the float's upper half (exact, NaN bits kept).
inline float bf16_to_float(uint16_t h) noexcept {
  return detail::half_impl::bits_float(uint32_t(h) << 16);
}

/// True unless the half `h` is an infinity or a NaN.
inline bool is_finite_half(uint16_t h) noexcept { return (h & 0x7C00u) != 0x7C00u; }

/// True when `h` is a finite normal half, |value| in [2^-14, 65504] (not 0, subnormal, inf, NaN).
inline bool is_normal_half(uint16_t h) noexcept {
  const uint32_t e = (h >> 10) & 0x1Fu;
  return e != 0 && e != 0x1Fu;
}

}  // namespace lowbit
