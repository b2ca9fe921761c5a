// q4_0.hpp: GGUF's Q4_0: blocks of 32 4-bit codes with one fp16 scale, x = d * q, q in -8..7.
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// Q4_0 (18 bytes per 32 weights, 4.5 bits per weight).
/// Layout: d (fp16) | qs[16]: weight i < 16 in the low nibble of qs[i], weight i >= 16 in the high
/// nibble of qs[i - 16]; a nibble holds q + 8.
/// Decode: x[i] = float(q_i) * float(d), as ggml's dequantize_row_q4_0.
/// Grid: d = the nearest fp16 of the wanted scale (saturating, any sign). Reference rounding:
/// d = m / -8 with m the weight of largest magnitude (it gets code -8, as in ggml), nearest codes.
struct Q4_0 {
  static constexpr Type type = Type::Q4_0;
  static constexpr int block_size = 32, type_size = 18, sub_block = 32;
  static constexpr int qmin = -8, qmax = 7;
  static constexpr bool has_offset = false;
  static constexpr int scale_lo = 0, scale_hi = 0, min_hi = 0;
  static constexpr float extreme_code = -8;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block));
    for (int i = 0; i < 16; ++i) {
      out[i] = float((block[2 + i] & 0xF) - 8) * d;
      out[i + 16] = float((block[2 + i] >> 4) - 8) * d;
    }
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block);
    for (int i = 0; i < 16; ++i) {
      codes[i] = int8_t((block[2 + i] & 0xF) - 8);
      codes[i + 16] = int8_t((block[2 + i] >> 4) - 8);
    }
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    detail::store_u16(block, p.d);
    for (int i = 0; i < 16; ++i)
      block[2 + i] = uint8_t(((codes[i] + 8) & 0xF) | (((codes[i + 16] + 8) & 0xF) << 4));
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
    detail::reference_quantize<Q4_0>(x, importance, block);
  }
};

}  // namespace lowbit::formats
