// iq4_xs.hpp: GGUF's IQ4_XS: 256-weight super-blocks of 8 sub-blocks with signed 6-bit scales and
// 4-bit indices into IQ4_NL's 16 levels, x = (d * scale) * level.
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/iq4_nl.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// IQ4_XS (136 bytes per 256 weights, 4.25 bits per weight).
/// Layout: d (fp16) | scales_h (16 bits, little-endian) | scales_l[4] | qs[128]. Sub-block j
/// (weights 32j..32j+31) stores u_j in 0..63, scale = u_j - 32 in -32..31: its low 4 bits are
/// nibble j % 2 of scales_l[j / 2] (low nibble first), its top 2 bits bits 2j, 2j+1 of scales_h.
/// Weight 32j + l has the index in the low (l < 16) or high (l >= 16) nibble of qs[16j + l % 16].
/// Codes are the levels (as IQ4_NL); decode (ggml's dequantize_row_iq4_xs):
/// dl = d * float(scale), x = dl * float(level).
/// Grid (fit): as Q3_K: d = fp16(S / -32) with S the wanted scale of largest magnitude (the rule of
/// ggml's quantizer; d may be negative), then per sub-block the scale in -32..31 with d * scale
/// nearest the wanted one. Reference rounding: scale_j = m_j / -127 with m_j the sub-block's weight
/// of largest magnitude, fit, nearest levels.
struct IQ4_XS {
  static constexpr Type type = Type::IQ4_XS;
  static constexpr int block_size = 256, type_size = 136, sub_block = 32;
  static constexpr int qmin = -127, qmax = 113;  ///< the extreme levels
  static constexpr const int8_t (&levels)[16] = detail::kIq4Levels;
  static constexpr bool has_offset = false;
  static constexpr int scale_lo = -32, scale_hi = 31, min_hi = 0;
  static constexpr float extreme_code = -127;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block));
    BlockParams p;
    int8_t q[256];
    unpack(block, p, q);
    for (int i = 0; i < 256; ++i) {
      const float dl = d * float(p.scales[size_t(i >> 5)]);
      out[i] = dl * float(q[i]);
    }
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block);
    const uint16_t sh = detail::load_u16(block + 2);
    const uint8_t* sl = block + 4;
    for (int j = 0; j < 8; ++j) {
      const int u = ((sl[j / 2] >> (4 * (j % 2))) & 0xF) | (((sh >> (2 * j)) & 3) << 4);
      p.scales[size_t(j)] = int16_t(u - 32);
    }
    const uint8_t* qs = block + 8;
    for (int i = 0; i < 256; ++i) {
      const int j = i >> 5, l = i & 31;
      codes[i] = levels[(qs[16 * j + (l & 15)] >> (4 * (l >> 4))) & 0xF];
    }
  }
  /// Codes must be levels.
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    detail::store_u16(block, p.d);
    uint16_t sh = 0;
    uint8_t* sl = block + 4;
    for (int b = 0; b < 4; ++b) sl[b] = 0;
    for (int j = 0; j < 8; ++j) {
      const int u = (p.scales[size_t(j)] + 32) & 63;
      sl[j / 2] = uint8_t(sl[j / 2] | ((u & 0xF) << (4 * (j % 2))));
      sh = uint16_t(sh | ((u >> 4) << (2 * j)));
    }
    detail::store_u16(block + 2, sh);
    uint8_t* qs = block + 8;
    for (int j = 0; j < 8; ++j)
      for (int l = 0; l < 16; ++l)
        qs[16 * j + l] = uint8_t(detail::iq4_index(codes[32 * j + l]) |
                                 (detail::iq4_index(codes[32 * j + 16 + l]) << 4));
  }
  static SubBlockParams sub_block_params(const BlockParams& p, int j) noexcept {
    return {half_to_float(p.d) * float(p.scales[size_t(j)]), 0.0f};
  }
  static BlockParams fit(const SubBlockParams* wanted) noexcept {
    return detail::fit_signed_super_block(wanted, 8, -32, 31);
  }
  /// The sub-block part of fit: sub-block j snapped to the grid of p's d.
  static void fit_sub_block(BlockParams& p, int j, const SubBlockParams& wanted) noexcept {
    detail::fit_signed_sub_block(p, j, wanted, -32, 31);
  }
  static void quantize(const float* x, const float* importance, uint8_t* block) noexcept {
    detail::reference_quantize<IQ4_XS>(x, importance, block);
  }
};

}  // namespace lowbit::formats
