// packing.hpp: dense bit packing of 2..8-bit codes (INT4 two a byte, INT2 four a byte).
#pragma once

#include <lowbit/core/types.hpp>

#include <cstddef>
#include <cstdint>

namespace lowbit {

/// Bytes one row of `cols` codes of `bits` bits occupies; rows start on a byte boundary.
inline size_t packed_row_bytes(Index cols, int bits) {
  return (static_cast<size_t>(cols) * static_cast<size_t>(bits) + 7) / 8;
}

/// Packs n codes as a little-endian bit stream: code i occupies bits [i*bits, (i+1)*bits), so
/// INT4 puts the even index in the low nibble and INT2 packs four a byte, index 0 lowest. Signed
/// codes are stored as their two's-complement low bits. `out` must hold packed_row_bytes(n, bits)
/// bytes; the padding bits of the last byte are zero.
inline void pack_codes(const int32_t* codes, Index n, int bits, uint8_t* out) noexcept {
  const size_t bytes = packed_row_bytes(n, bits);
  for (size_t i = 0; i < bytes; ++i) out[i] = 0;
  const uint32_t mask = (1u << bits) - 1u;
  for (Index i = 0; i < n; ++i) {
    const size_t bit = static_cast<size_t>(i) * static_cast<size_t>(bits);
    const uint32_t v = (static_cast<uint32_t>(codes[i]) & mask) << (bit % 8);
    out[bit / 8] = static_cast<uint8_t>(out[bit / 8] | (v & 0xFFu));
    if ((bit % 8) + static_cast<size_t>(bits) > 8)
      out[bit / 8 + 1] = static_cast<uint8_t>(out[bit / 8 + 1] | (v >> 8));
  }
}

/// Inverse of pack_codes(); sign-extends when `is_signed`.
inline void unpack_codes(const uint8_t* in, Index n, int bits, bool is_signed,
                         int32_t* codes) noexcept {
  const uint32_t mask = (1u << bits) - 1u;
  const uint32_t sign = 1u << (bits - 1);
  for (Index i = 0; i < n; ++i) {
    const size_t bit = static_cast<size_t>(i) * static_cast<size_t>(bits);
    uint32_t v = in[bit / 8];
    if ((bit % 8) + static_cast<size_t>(bits) > 8) v |= static_cast<uint32_t>(in[bit / 8 + 1]) << 8;
    v = (v >> (bit % 8)) & mask;
    codes[i] = is_signed ? static_cast<int32_t>(v ^ sign) - static_cast<int32_t>(sign)
                         : static_cast<int32_t>(v);
  }
}

}  // namespace lowbit
