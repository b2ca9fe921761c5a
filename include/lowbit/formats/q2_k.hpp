// q2_k.hpp: GGUF's Q2_K: 256-weight super-blocks of 16 sub-blocks with 4-bit scales and mins,
// 2-bit codes, x = (d * scale) * q - (dmin * min).
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// Q2_K (84 bytes per 256 weights, 2.625 bits per weight).
/// Layout: scales[16] | qs[64] | d (fp16) | dmin (fp16). Sub-block j (weights 16j..16j+15) has
/// scale = scales[j] & 15 and min = scales[j] >> 4. Weight i = 128n + 32k + l (n < 2, k < 4,
/// l < 32) has the 2-bit code q = (qs[32n + l] >> 2k) & 3.
/// Decode (ggml's dequantize_row_q2_K): dl = d * float(scale), ml = dmin * float(min),
/// x = dl * float(q) - ml (each product rounded). So scale_j = dl, offset_j = -ml.
/// Grid (fit): d = fp16(max wanted scale / 15), dmin = fp16(max wanted -offset / 15) (nearest,
/// saturating; negative wishes count as 0); then per sub-block the scale in 0..15 with d * scale
/// nearest the wanted scale and the min in 0..15 with dmin * min nearest -offset (a wanted
/// offset > 0 gets min 0). Reference rounding: min-max per sub-block (min raised to <= 0), fit,
/// nearest codes.
struct Q2_K {
  static constexpr Type type = Type::Q2_K;
  static constexpr int block_size = 256, type_size = 84, sub_block = 16;
  static constexpr int qmin = 0, qmax = 3;
  static constexpr bool has_offset = true;
  static constexpr bool nonpositive_offset = true;  ///< the format subtracts dmin * min
  static constexpr int scale_lo = 0, scale_hi = 15, min_hi = 15;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block + 80));
    const float dmin = half_to_float(detail::load_u16(block + 82));
    const uint8_t* qs = block + 16;
    for (int i = 0; i < 256; ++i) {
      const int n = i >> 7, k = (i >> 5) & 3, l = i & 31;
      const uint8_t sc = block[i >> 4];
      const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
      out[i] = dl * float((qs[32 * n + l] >> (2 * k)) & 3) - ml;  // exact products
    }
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block + 80);
    p.m = detail::load_u16(block + 82);
    for (int j = 0; j < 16; ++j) {
      p.scales[size_t(j)] = int16_t(block[j] & 0xF);
      p.mins[size_t(j)] = int16_t(block[j] >> 4);
    }
    const uint8_t* qs = block + 16;
    for (int i = 0; i < 256; ++i) {
      const int n = i >> 7, k = (i >> 5) & 3, l = i & 31;
      codes[i] = int8_t((qs[32 * n + l] >> (2 * k)) & 3);
    }
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    for (int j = 0; j < 16; ++j)
      block[j] = uint8_t((p.scales[size_t(j)] & 0xF) | ((p.mins[size_t(j)] & 0xF) << 4));
    uint8_t* qs = block + 16;
    for (int b = 0; b < 64; ++b) qs[b] = 0;
    for (int i = 0; i < 256; ++i) {
      const int n = i >> 7, k = (i >> 5) & 3, l = i & 31;
      qs[32 * n + l] = uint8_t(qs[32 * n + l] | ((codes[i] & 3) << (2 * k)));
    }
    detail::store_u16(block + 80, p.d);
    detail::store_u16(block + 82, p.m);
  }
  static SubBlockParams sub_block_params(const BlockParams& p, int j) noexcept {
    const float dl = half_to_float(p.d) * float(p.scales[size_t(j)]);
    const float ml = half_to_float(p.m) * float(p.mins[size_t(j)]);
    return {dl, -ml};
  }
  static BlockParams fit(const SubBlockParams* wanted) noexcept {
    return detail::fit_unsigned_super_block(wanted, 16, 15);
  }
  /// The sub-block part of fit: sub-block j snapped to the grid of p's d and dmin.
  static void fit_sub_block(BlockParams& p, int j, const SubBlockParams& wanted) noexcept {
    detail::fit_unsigned_sub_block(p, j, wanted, 15);
  }
  static void quantize(const float* x, const float* importance, uint8_t* block) noexcept {
    detail::reference_quantize<Q2_K>(x, importance, block);
  }
};

}  // namespace lowbit::formats
