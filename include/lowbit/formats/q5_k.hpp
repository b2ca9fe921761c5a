// q5_k.hpp: GGUF's Q5_K: 256-weight super-blocks of 8 sub-blocks with 6-bit scales and mins,
// 5-bit codes (4 low bits plus a high-bit plane), x = (d * scale) * q - (dmin * min).
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/q4_k.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// Q5_K (176 bytes per 256 weights, 5.5 bits per weight).
/// Layout: d (fp16) | dmin (fp16) | scales[12] (as Q4_K) | qh[32] | qs[128]. Weight
/// i = 64c + 32h + l (c < 4, h < 2, l < 32) is in sub-block i / 32; its code q in 0..31 has the
/// low (h = 0) or high (h = 1) nibble of qs[32c + l] as its low 4 bits and bit i / 32 of qh[l] as
/// its fifth.
/// Decode (ggml's dequantize_row_q5_K): d1 = d * float(scale), m1 = dmin * float(min),
/// x = d1 * float(q) - m1 (each product rounded).
/// Grid (fit): as Q4_K (6-bit scales and mins relative to fp16 d = max scale / 63 and
/// dmin = max min / 63). Reference rounding: min-max per sub-block (min raised to <= 0), fit,
/// nearest codes.
struct Q5_K {
  static constexpr Type type = Type::Q5_K;
  static constexpr int block_size = 256, type_size = 176, sub_block = 32;
  static constexpr int qmin = 0, qmax = 31;
  static constexpr bool has_offset = true;
  static constexpr bool nonpositive_offset = true;  ///< the format subtracts dmin * min
  static constexpr int scale_lo = 0, scale_hi = 63, min_hi = 63;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block));
    const float dmin = half_to_float(detail::load_u16(block + 2));
    BlockParams p;
    int8_t q[256];
    unpack(block, p, q);
    for (int j = 0; j < 8; ++j) {
      const float d1 = d * float(p.scales[size_t(j)]), m1 = dmin * float(p.mins[size_t(j)]);
      for (int l = 0; l < 32; ++l) out[32 * j + l] = d1 * float(q[32 * j + l]) - m1;
    }
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block);
    p.m = detail::load_u16(block + 2);
    detail::unpack_scales_mins_k4(block + 4, p);
    const uint8_t* qh = block + 16;
    const uint8_t* qs = block + 48;
    for (int i = 0; i < 256; ++i) {
      const int c = i >> 6, h = (i >> 5) & 1, l = i & 31;
      const int low = (qs[32 * c + l] >> (4 * h)) & 0xF;
      const int high = (qh[l] >> (i >> 5)) & 1;
      codes[i] = int8_t(low | (high << 4));
    }
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    detail::store_u16(block, p.d);
    detail::store_u16(block + 2, p.m);
    detail::pack_scales_mins_k4(p, block + 4);
    uint8_t* qh = block + 16;
    uint8_t* qs = block + 48;
    for (int l = 0; l < 32; ++l) qh[l] = 0;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        qs[32 * c + l] =
            uint8_t((codes[64 * c + l] & 0xF) | ((codes[64 * c + 32 + l] & 0xF) << 4));
    for (int i = 0; i < 256; ++i)
      qh[i & 31] = uint8_t(qh[i & 31] | (((codes[i] >> 4) & 1) << (i >> 5)));
  }
  static SubBlockParams sub_block_params(const BlockParams& p, int j) noexcept {
    return detail::sub_block_params_k4(p, j);
  }
  static BlockParams fit(const SubBlockParams* wanted) noexcept {
    return detail::fit_unsigned_super_block(wanted, 8, 63);
  }
  /// The sub-block part of fit: sub-block j snapped to the grid of p's d and dmin.
  static void fit_sub_block(BlockParams& p, int j, const SubBlockParams& wanted) noexcept {
    detail::fit_unsigned_sub_block(p, j, wanted, 63);
  }
  static void quantize(const float* x, const float* importance, uint8_t* block) noexcept {
    detail::reference_quantize<Q5_K>(x, importance, block);
  }
};

}  // namespace lowbit::formats
