// fp16.hpp: IEEE binary16 <-> float conversion for stored group scales (exact and portable).
#pragma once

#include <cstdint>
#include <cstring>

namespace lowbit::detail {

/// Rounds a float to the nearest binary16 (ties to even). Returns false, leaving `out` unset,
/// unless the result is a finite normal half (|x| in [2^-14, 65504]): subnormal scales would lose
/// precision, so callers fall back to float storage then.
inline bool float_to_half(float x, uint16_t& out) noexcept {
  uint32_t f;
  std::memcpy(&f, &x, 4);
  const uint32_t sign = (f >> 16) & 0x8000u;
  int exp = int((f >> 23) & 0xFFu) - 127 + 15;
  uint32_t mant = f & 0x7FFFFFu;
  uint32_t m = mant >> 13;
  const uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (m & 1u))) ++m;
  if (m == 0x400u) {
    m = 0;
    ++exp;
  }
  if (exp < 1 || exp > 30) return false;
  out = uint16_t(sign | (uint32_t(exp) << 10) | m);
  return true;
}

/// Exact binary16 -> float for normal halves (the only ones float_to_half produces).
inline float half_to_float(uint16_t h) noexcept {
  const uint32_t f = (uint32_t(h & 0x8000u) << 16) | ((uint32_t((h >> 10) & 0x1Fu) + 112u) << 23) |
                     (uint32_t(h & 0x3FFu) << 13);
  float x;
  std::memcpy(&x, &f, 4);
  return x;
}

}  // namespace lowbit::detail
