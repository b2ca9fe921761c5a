// q5_1.hpp: GGUF's Q5_1: blocks of 32 5-bit codes with fp16 scale and min, x = d * q + m.
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// Q5_1 (24 bytes per 32 weights, 6 bits per weight).
/// Layout: d (fp16) | m (fp16) | qh (32 bits, little-endian) | qs[16]. Weight i's code q in 0..31:
/// low 4 bits in the low nibble of qs[i] (i < 16) or the high nibble of qs[i - 16], the fifth bit
/// as bit i of qh.
/// Decode: x[i] = float(q_i) * float(d) + float(m) (the product rounded first), as ggml.
/// Grid: d and m are the nearest fp16 of the wanted scale and offset (saturating, any sign).
/// Reference rounding: d = (max - min) / 31, m = min, nearest codes.
struct Q5_1 {
  static constexpr Type type = Type::Q5_1;
  static constexpr int block_size = 32, type_size = 24, sub_block = 32;
  static constexpr int qmin = 0, qmax = 31;
  static constexpr bool has_offset = true;
  static constexpr bool nonpositive_offset = false;  ///< m is a free fp16
  static constexpr int scale_lo = 0, scale_hi = 0, min_hi = 0;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block));
    const float m = half_to_float(detail::load_u16(block + 2));
    int8_t q[32];
    BlockParams p;
    unpack(block, p, q);
    for (int i = 0; i < 32; ++i) out[i] = float(q[i]) * d + m;  // exact product
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block);
    p.m = detail::load_u16(block + 2);
    const uint32_t qh = detail::load_u32(block + 4);
    for (int i = 0; i < 16; ++i) {
      codes[i] = int8_t((block[8 + i] & 0xF) | (((qh >> i) & 1u) << 4));
      codes[i + 16] = int8_t((block[8 + i] >> 4) | (((qh >> (i + 16)) & 1u) << 4));
    }
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    detail::store_u16(block, p.d);
    detail::store_u16(block + 2, p.m);
    uint32_t qh = 0;
    for (int i = 0; i < 32; ++i) qh |= uint32_t((codes[i] >> 4) & 1) << i;
    detail::store_u32(block + 4, qh);
    for (int i = 0; i < 16; ++i)
      block[8 + i] = uint8_t((codes[i] & 0xF) | ((codes[i + 16] & 0xF) << 4));
  }
  static SubBlockParams sub_block_params(const BlockParams& p, int /*j*/) noexcept {
    return {half_to_float(p.d), half_to_float(p.m)};
  }
  static BlockParams fit(const SubBlockParams* wanted) noexcept {
    return detail::fit_legacy(wanted[0], true);
  }
  /// The sub-block part of fit (for a legacy format the whole block).
  static void fit_sub_block(BlockParams& p, int /*j*/, const SubBlockParams& wanted) noexcept {
    p = fit(&wanted);
  }
  static void quantize(const float* x, const float* importance, uint8_t* block) noexcept {
    detail::reference_quantize<Q5_1>(x, importance, block);
  }
};

}  // namespace lowbit::formats
