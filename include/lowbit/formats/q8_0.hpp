// q8_0.hpp: GGUF's Q8_0: blocks of 32 int8 codes with one fp16 scale, x = d * q.
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// Q8_0 (34 bytes per 32 weights, 8.5 bits per weight).
/// Layout: d (fp16, little-endian) | qs[32]: qs[i] is weight i's code q as int8.
/// Decode: x[i] = float(q_i) * float(d), as ggml's dequantize_row_q8_0.
/// Grid: fit gives d = the nearest fp16 of the wanted scale (ties to even, saturating at ±65504,
/// any sign). Reference rounding: d = max|x| / 127 (ggml's rule), then each weight's nearest code.
struct Q8_0 {
  static constexpr Type type = Type::Q8_0;
  static constexpr int block_size = 32, type_size = 34, sub_block = 32;
  static constexpr int qmin = -128, qmax = 127;
  static constexpr bool has_offset = false;
  static constexpr int scale_lo = 0, scale_hi = 0, min_hi = 0;  ///< no sub-block scales or mins
  static constexpr float extreme_code = 127;  ///< the code the reference rounding gives max|x|

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block));
    for (int i = 0; i < 32; ++i) out[i] = float(int8_t(block[2 + i])) * d;
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block);
    for (int i = 0; i < 32; ++i) codes[i] = int8_t(block[2 + i]);
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    detail::store_u16(block, p.d);
    for (int i = 0; i < 32; ++i) block[2 + i] = uint8_t(codes[i]);
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
    detail::reference_quantize<Q8_0>(x, importance, block);
  }
};

}  // namespace lowbit::formats
