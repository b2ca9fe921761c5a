// q6_k.hpp: GGUF's Q6_K: 256-weight super-blocks of 16 sub-blocks with int8 scales and 6-bit
// signed codes (4 low bits plus 2 high bits), x = (d * scale) * q.
#pragma once

#include <lowbit/formats/block.hpp>
#include <lowbit/formats/rounding.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>

namespace lowbit::formats {

/// Q6_K (210 bytes per 256 weights, 6.5625 bits per weight).
/// Layout: ql[128] | qh[64] | scales[16] (int8) | d (fp16). Weight i = 128n + 32k + l (n < 2,
/// k < 4, l < 32) stores u = q + 32 in 0..63: its low 4 bits are the low (k < 2) or high (k >= 2)
/// nibble of ql[64n + 32(k & 1) + l], its top 2 bits are bits 2k, 2k+1 of qh[32n + l]. Sub-block
/// j (weights 16j..16j+15) has the scale scales[j] in -128..127.
/// Decode (ggml's dequantize_row_q6_K): x = (d * float(scale)) * float(q), both products rounded
/// in that order.
/// Grid (fit): d = fp16(S / -128) with S the wanted scale of largest magnitude (it gets scale
/// -128 as in ggml's reference; d may be negative), then per sub-block the scale in -128..127
/// with d * scale nearest the wanted one. Reference rounding: scale_j = m_j / -32 with m_j the
/// sub-block's weight of largest magnitude, fit, nearest codes.
struct Q6_K {
  static constexpr Type type = Type::Q6_K;
  static constexpr int block_size = 256, type_size = 210, sub_block = 16;
  static constexpr int qmin = -32, qmax = 31;
  static constexpr bool has_offset = false;
  static constexpr int scale_lo = -128, scale_hi = 127, min_hi = 0;
  static constexpr float extreme_code = -32;

  static void decode(const uint8_t* block, float* out) noexcept {
    const float d = half_to_float(detail::load_u16(block + 208));
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
    p.d = detail::load_u16(block + 208);
    for (int j = 0; j < 16; ++j) p.scales[size_t(j)] = int16_t(int8_t(block[192 + j]));
    const uint8_t* ql = block;
    const uint8_t* qh = block + 128;
    for (int i = 0; i < 256; ++i) {
      const int n = i >> 7, k = (i >> 5) & 3, l = i & 31;
      const int low = (ql[64 * n + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0xF;
      const int high = (qh[32 * n + l] >> (2 * k)) & 3;
      codes[i] = int8_t((low | (high << 4)) - 32);
    }
  }
  static void pack(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept {
    uint8_t* ql = block;
    uint8_t* qh = block + 128;
    for (int b = 0; b < 192; ++b) block[b] = 0;
    for (int i = 0; i < 256; ++i) {
      const int n = i >> 7, k = (i >> 5) & 3, l = i & 31;
      const int u = (codes[i] + 32) & 63;
      uint8_t& lo = ql[64 * n + 32 * (k & 1) + l];
      lo = uint8_t(lo | ((u & 0xF) << (4 * (k >> 1))));
      qh[32 * n + l] = uint8_t(qh[32 * n + l] | ((u >> 4) << (2 * k)));
    }
    for (int j = 0; j < 16; ++j) block[192 + j] = uint8_t(int8_t(p.scales[size_t(j)]));
    detail::store_u16(block + 208, p.d);
  }
  static SubBlockParams sub_block_params(const BlockParams& p, int j) noexcept {
    return {half_to_float(p.d) * float(p.scales[size_t(j)]), 0.0f};
  }
  static BlockParams fit(const SubBlockParams* wanted) noexcept {
    return detail::fit_signed_super_block(wanted, 16, -128, 127);
  }
  /// The sub-block part of fit: sub-block j snapped to the grid of p's d.
  static void fit_sub_block(BlockParams& p, int j, const SubBlockParams& wanted) noexcept {
    detail::fit_signed_sub_block(p, j, wanted, -128, 127);
  }
  static void quantize(const float* x, const float* importance, uint8_t* block) noexcept {
    detail::reference_quantize<Q6_K>(x, importance, block);
  }
};

}  // namespace lowbit::formats
