// q5_0.hpp: GGUF's Q5_0: blocks of 32 5-bit codes with one fp16 scale, x = d * q, q in -16..15.
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// Q5_0 (22 bytes per 32 weights, 5.5 bits per weight).
/// Layout: d (fp16) | qh (32 bits, little-endian) | qs[16]. Weight i stores u = q + 16 in 0..31:
/// its low 4 bits in the low nibble of qs[i] (i < 16) or the high nibble of qs[i - 16] (i >= 16),
/// its fifth bit as bit i of qh.
/// Decode: x[i] = float(q_i) * float(d), as ggml's dequantize_row_q5_0.
/// Grid: d = the nearest fp16 of the wanted scale (saturating, any sign). Reference rounding:
/// d = m / -16 with m the weight of largest magnitude (code -16, as in ggml), nearest codes.
struct Q5_0 {
  static constexpr Type type = Type::Q5_0;
  static constexpr int block_size = 32, type_size = 22, sub_block = 32;
  static constexpr int qmin = -16, qmax = 15;
  static constexpr bool has_offset = false;
  static constexpr int scale_lo = 0, scale_hi = 0, min_hi = 0;
  static constexpr float extreme_code = -16;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block));
    int8_t q[32];
    BlockParams p;
    unpack(block, p, q);
    for (int i = 0; i < 32; ++i) out[i] = float(q[i]) * d;
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block);
    const uint32_t qh = detail::load_u32(block + 2);
    for (int i = 0; i < 16; ++i) {
      codes[i] = int8_t(((block[6 + i] & 0xF) | (((qh >> i) & 1u) << 4)) - 16);
      codes[i + 16] = int8_t(((block[6 + i] >> 4) | (((qh >> (i + 16)) & 1u) << 4)) - 16);
    }
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    detail::store_u16(block, p.d);
    uint32_t qh = 0;
    for (int i = 0; i < 32; ++i) qh |= uint32_t(((codes[i] + 16) >> 4) & 1) << i;
    detail::store_u32(block + 2, qh);
    for (int i = 0; i < 16; ++i)
      block[6 + i] = uint8_t(((codes[i] + 16) & 0xF) | (((codes[i + 16] + 16) & 0xF) << 4));
  }
  static SubBlockParams sub_block_params(const BlockParams& p, int /*j*/) noexcept {
    return {half_to_float(p.d), 0.0f};
  }
  static BlockParams fit(const SubBlockParams* wanted) noexcept {
    return detail::fit_legacy(wanted[0], false);
  }
  /// The sub-block part of fit (for a legacy format the whole block).
  static void fit_sub_block(BlockParams& p, int /*j*/, const SubBlockParams& wanted) noexcept {
    p = fit(&wanted);
  }
  static void quantize(const float* x, const float* importance, uint8_t* block) noexcept {
    detail::reference_quantize<Q5_0>(x, importance, block);
  }
};

}  // namespace lowbit::formats
