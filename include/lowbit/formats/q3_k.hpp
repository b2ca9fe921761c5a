// q3_k.hpp: GGUF's Q3_K: 256-weight super-blocks of 16 sub-blocks with signed 6-bit scales and
// 3-bit signed codes (2 low bits plus a high-bit mask), x = (d * scale) * q.
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// Q3_K (110 bytes per 256 weights, 3.4375 bits per weight).
/// Layout: hmask[32] | qs[64] | scales[12] | d (fp16).
/// Codes: weight i = 128n + 32k + l (n < 2, k < 4, l < 32) has low bits
/// (qs[32n + l] >> 2k) & 3 and high bit (hmask[l] >> (i / 32)) & 1; q = low - (high ? 0 : 4),
/// in -4..3.
/// Scales: sub-block j (weights 16j..16j+15) stores a 6-bit u_j, scale = u_j - 32 in -32..31;
/// u_j's low 4 bits are the low nibble of scales[j] (j < 8) or the high nibble of scales[j - 8]
/// (j >= 8), its top 2 bits are bits 2(j/4)..2(j/4)+1 of scales[8 + j % 4].
/// Decode (ggml's dequantize_row_q3_K): dl = d * float(scale), x = dl * float(q).
/// Grid (fit): d = fp16(S / -32) with S the wanted scale of largest magnitude (so it gets scale
/// -32 as in ggml's reference; d may be negative), then per sub-block the scale in -32..31 with
/// d * scale nearest the wanted one. Reference rounding: scale_j = m_j / -4 with m_j the
/// sub-block's weight of largest magnitude, fit, nearest codes.
struct Q3_K {
  static constexpr Type type = Type::Q3_K;
  static constexpr int block_size = 256, type_size = 110, sub_block = 16;
  static constexpr int qmin = -4, qmax = 3;
  static constexpr bool has_offset = false;
  static constexpr int scale_lo = -32, scale_hi = 31, min_hi = 0;
  static constexpr float extreme_code = -4;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block + 108));
    BlockParams p;
    int8_t q[256];
    unpack(block, p, q);
    for (int i = 0; i < 256; ++i) {
      const float dl = d * float(p.scales[size_t(i >> 4)]);
      out[i] = dl * float(q[i]);
    }
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block + 108);
    const uint8_t* s = block + 96;
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
      const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
      p.scales[size_t(j)] = int16_t((low | (high << 4)) - 32);
    }
    const uint8_t* hmask = block;
    const uint8_t* qs = block + 32;
    for (int i = 0; i < 256; ++i) {
      const int n = i >> 7, k = (i >> 5) & 3, l = i & 31;
      const int low = (qs[32 * n + l] >> (2 * k)) & 3;
      const int high = (hmask[l] >> (i >> 5)) & 1;
      codes[i] = int8_t(low - (high ? 0 : 4));
    }
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    uint8_t* hmask = block;
    uint8_t* qs = block + 32;
    uint8_t* s = block + 96;
    for (int b = 0; b < 108; ++b) block[b] = 0;
    for (int i = 0; i < 256; ++i) {
      const int n = i >> 7, k = (i >> 5) & 3, l = i & 31;
      const int u = (codes[i] + 4) & 7;
      qs[32 * n + l] = uint8_t(qs[32 * n + l] | ((u & 3) << (2 * k)));
      hmask[l] = uint8_t(hmask[l] | ((u >> 2) << (i >> 5)));
    }
    for (int j = 0; j < 16; ++j) {
      const int u = (p.scales[size_t(j)] + 32) & 63;
      if (j < 8)
        s[j] = uint8_t(s[j] | (u & 0xF));
      else
        s[j - 8] = uint8_t(s[j - 8] | ((u & 0xF) << 4));
      s[8 + j % 4] = uint8_t(s[8 + j % 4] | ((u >> 4) << (2 * (j / 4))));
    }
    detail::store_u16(block + 108, p.d);
  }
  static SubBlockParams sub_block_params(const BlockParams& p, int j) noexcept {
    return {half_to_float(p.d) * float(p.scales[size_t(j)]), 0.0f};
  }
  static BlockParams fit(const SubBlockParams* wanted) noexcept {
    return detail::fit_signed_super_block(wanted, 16, -32, 31);
  }
  /// The sub-block part of fit: sub-block j snapped to the grid of p's d.
  static void fit_sub_block(BlockParams& p, int j, const SubBlockParams& wanted) noexcept {
    detail::fit_signed_sub_block(p, j, wanted, -32, 31);
  }
  static void quantize(const float* x, const float* importance, uint8_t* block) noexcept {
    detail::reference_quantize<Q3_K>(x, importance, block);
  }
};

}  // namespace lowbit::formats
