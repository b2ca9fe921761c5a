// iq4_nl.hpp: GGUF's IQ4_NL: blocks of 32 4-bit indices into a fixed non-uniform grid of 16 int8
// values with one fp16 scale, x = d * level.
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

namespace detail {

/// The 16 values of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl), ascending; index i is stored.
inline constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

/// The stored 4-bit index of an IQ4 level (0 for a value that is not a level).
inline uint8_t iq4_index(int level) noexcept {
  for (uint8_t i = 0; i < 16; ++i)
    if (kIq4Levels[i] == level) return i;
  return 0;
}

}  // namespace detail

/// IQ4_NL (18 bytes per 32 weights, 4.5 bits per weight).
/// Layout: d (fp16) | qs[16]: weight i < 16 in the low nibble of qs[i], weight i >= 16 in the high
/// nibble of qs[i - 16]; a nibble is an index into the 16 levels.
/// Codes are the levels themselves (one of -127, -104, ..., 113: `levels`), so decode is
/// x[i] = float(d) * float(level_i), as ggml's dequantize_row_iq4_nl, and decode_value applies.
/// Grid: d = the nearest fp16 of the wanted scale (saturating, any sign). Reference rounding:
/// d = m / -127 with m the weight of largest magnitude (it gets level -127, as ggml's rule starts
/// from), then each weight's nearest level.
struct IQ4_NL {
  static constexpr Type type = Type::IQ4_NL;
  static constexpr int block_size = 32, type_size = 18, sub_block = 32;
  static constexpr int qmin = -127, qmax = 113;  ///< the extreme levels
  static constexpr const int8_t (&levels)[16] = detail::kIq4Levels;
  static constexpr bool has_offset = false;
  static constexpr int scale_lo = 0, scale_hi = 0, min_hi = 0;
  static constexpr float extreme_code = -127;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block));
    for (int i = 0; i < 16; ++i) {
      out[i] = d * float(levels[block[2 + i] & 0xF]);
      out[i + 16] = d * float(levels[block[2 + i] >> 4]);
    }
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block);
    for (int i = 0; i < 16; ++i) {
      codes[i] = levels[block[2 + i] & 0xF];
      codes[i + 16] = levels[block[2 + i] >> 4];
    }
  }
  /// Codes must be levels.
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    detail::store_u16(block, p.d);
    for (int i = 0; i < 16; ++i)
      block[2 + i] = uint8_t(detail::iq4_index(codes[i]) | (detail::iq4_index(codes[i + 16]) << 4));
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
    detail::reference_quantize<IQ4_NL>(x, importance, block);
  }
};

}  // namespace lowbit::formats
