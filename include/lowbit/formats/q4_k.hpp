// q4_k.hpp: GGUF's Q4_K: 256-weight super-blocks of 8 sub-blocks with 6-bit scales and mins,
// 4-bit codes, x = (d * scale) * q - (dmin * min).
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

namespace detail {

/// The 12 bytes holding eight 6-bit scales s_j and mins m_j of Q4_K and Q5_K: for k < 4,
/// byte k = s_k | (s_{k+4} >> 4) << 6, byte 4 + k = m_k | (m_{k+4} >> 4) << 6 and
/// byte 8 + k = (s_{k+4} & 15) | (m_{k+4} & 15) << 4.
inline void unpack_scales_mins_k4(const uint8_t* q, BlockParams& p) noexcept {
  for (int j = 0; j < 8; ++j) {
    int s, m;
    if (j < 4) {
      s = q[j] & 63;
      m = q[j + 4] & 63;
    } else {
      s = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
      m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
    p.scales[size_t(j)] = int16_t(s);
    p.mins[size_t(j)] = int16_t(m);
  }
}

inline void pack_scales_mins_k4(const BlockParams& p, uint8_t* q) noexcept {
  for (int k = 0; k < 4; ++k) {
    const int s_lo = p.scales[size_t(k)] & 63, s_hi = p.scales[size_t(k + 4)] & 63;
    const int m_lo = p.mins[size_t(k)] & 63, m_hi = p.mins[size_t(k + 4)] & 63;
    q[k] = uint8_t(s_lo | ((s_hi >> 4) << 6));
    q[k + 4] = uint8_t(m_lo | ((m_hi >> 4) << 6));
    q[k + 8] = uint8_t((s_hi & 0xF) | ((m_hi & 0xF) << 4));
  }
}

/// Effective parameters of Q4_K/Q5_K sub-block j: d * scale and -(dmin * min).
inline SubBlockParams sub_block_params_k4(const BlockParams& p, int j) noexcept {
  const float dl = half_to_float(p.d) * float(p.scales[size_t(j)]);
  const float ml = half_to_float(p.m) * float(p.mins[size_t(j)]);
  return {dl, -ml};
}

}  // namespace detail

/// Q4_K (144 bytes per 256 weights, 4.5 bits per weight).
/// Layout: d (fp16) | dmin (fp16) | scales[12] (eight 6-bit scales and mins, packed as
/// detail::pack_scales_mins_k4 describes) | qs[128]. Weight i = 64c + 32h + l (c < 4, h < 2,
/// l < 32) is in sub-block i / 32 = 2c + h; its code q in 0..15 is the low (h = 0) or high (h = 1)
/// nibble of qs[32c + l].
/// Decode (ggml's dequantize_row_q4_K): d1 = d * float(scale), m1 = dmin * float(min),
/// x = d1 * float(q) - m1 (each product rounded).
/// Grid (fit): d = fp16(max wanted scale / 63), dmin = fp16(max wanted -offset / 63) (nearest,
/// saturating; negative wishes count as 0), then per sub-block the scale in 0..63 with d * scale
/// nearest the wanted scale and the min in 0..63 with dmin * min nearest -offset (a wanted
/// offset > 0 gets min 0). Reference rounding: min-max per sub-block (min raised to <= 0), fit,
/// nearest codes.
struct Q4_K {
  static constexpr Type type = Type::Q4_K;
  static constexpr int block_size = 256, type_size = 144, sub_block = 32;
  static constexpr int qmin = 0, qmax = 15;
  static constexpr bool has_offset = true;
  static constexpr bool nonpositive_offset = true;  ///< the format subtracts dmin * min
  static constexpr int scale_lo = 0, scale_hi = 63, min_hi = 63;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block));
    const float dmin = half_to_float(detail::load_u16(block + 2));
    BlockParams p;
    detail::unpack_scales_mins_k4(block + 4, p);
    const uint8_t* qs = block + 16;
    for (int j = 0; j < 8; ++j) {
      const float d1 = d * float(p.scales[size_t(j)]), m1 = dmin * float(p.mins[size_t(j)]);
      const uint8_t* q = qs + 32 * (j >> 1);
      const int shift = 4 * (j & 1);
      for (int l = 0; l < 32; ++l) out[32 * j + l] = d1 * float((q[l] >> shift) & 0xF) - m1;
    }
  }
  static void unpack(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept {
    p = BlockParams{};
    p.d = detail::load_u16(block);
    p.m = detail::load_u16(block + 2);
    detail::unpack_scales_mins_k4(block + 4, p);
    const uint8_t* qs = block + 16;
    for (int i = 0; i < 256; ++i) {
      const int c = i >> 6, h = (i >> 5) & 1, l = i & 31;
      codes[i] = int8_t((qs[32 * c + l] >> (4 * h)) & 0xF);
    }
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    detail::store_u16(block, p.d);
    detail::store_u16(block + 2, p.m);
    detail::pack_scales_mins_k4(p, block + 4);
    uint8_t* qs = block + 16;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        qs[32 * c + l] =
            uint8_t((codes[64 * c + l] & 0xF) | ((codes[64 * c + 32 + l] & 0xF) << 4));
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
    detail::reference_quantize<Q4_K>(x, importance, block);
  }
};

}  // namespace lowbit::formats
