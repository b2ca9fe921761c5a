// kernels_neon.hpp: AArch64 kernels: NEON (widening multiplies) and NEON with sdot (dotprod).
#pragma once

#include <lowbit/core/quantize.hpp>
#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/block_layout.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#if defined(LOWBIT_AARCH64)
#include <arm_neon.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

namespace lowbit::kernels::neon_common {

/// What both AArch64 paths share: a block of 16 lanes is four q registers. sdot and smull are
/// signed x signed, so 8-bit codes are loaded as u - 128 (w8_bias) and the zero point is shifted
/// the same way; 4-bit codes (< 16) are already valid signed bytes.
struct NeonBase {
  static constexpr int int_mr = 4, int_nb = 2, grouped_mr = 4, grouped_nb = 2, f32_mr = 4, f32_nb = 2;
  static constexpr int w8_bias = 128;
  struct I { int32x4_t v[4]; };
  struct F { float32x4_t v[4]; };
  struct W { int8x16_t v[4]; };
  struct R { uint8x16_t v[4]; };
  using A = int8x16_t;

  static W load8(const uint8_t* p) {
    const uint8x16_t bias = vdupq_n_u8(0x80);
    W w;
    for (int q = 0; q < 4; ++q) w.v[q] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p + 16 * q), bias));
    return w;
  }
  static void load4(const uint8_t* p, W& lo, W& hi) {
    const uint8x16_t m = vdupq_n_u8(0x0F);
    for (int q = 0; q < 4; ++q) {
      const uint8x16_t b = vld1q_u8(p + 16 * q);
      lo.v[q] = vreinterpretq_s8_u8(vandq_u8(b, m));
      hi.v[q] = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
    }
  }
  static A bcast(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
  }

  static I set_i(int32_t x) { return {{vdupq_n_s32(x), vdupq_n_s32(x), vdupq_n_s32(x), vdupq_n_s32(x)}}; }
  static I load_zw(const uint8_t* p) {
    const uint8x16_t b = vld1q_u8(p);
    const uint16x8_t lo = vmovl_u8(vget_low_u8(b)), hi = vmovl_u8(vget_high_u8(b));
    return {{vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo))), vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(lo))),
             vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi))), vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(hi)))}};
  }
  static I load_i(const int32_t* p) { return {{vld1q_s32(p), vld1q_s32(p + 4), vld1q_s32(p + 8), vld1q_s32(p + 12)}}; }
  static void store_i(int32_t* p, const I& a) {
    for (int q = 0; q < 4; ++q) vst1q_s32(p + 4 * q, a.v[q]);
  }
  static I sub(const I& a, const I& b) {
    I r;
    for (int q = 0; q < 4; ++q) r.v[q] = vsubq_s32(a.v[q], b.v[q]);
    return r;
  }
  static I mul(const I& a, const I& b) {
    I r;
    for (int q = 0; q < 4; ++q) r.v[q] = vmulq_s32(a.v[q], b.v[q]);
    return r;
  }

  static F zero_f() { return set_f(0.0f); }
  static F set_f(float x) { return {{vdupq_n_f32(x), vdupq_n_f32(x), vdupq_n_f32(x), vdupq_n_f32(x)}}; }
  static F to_f(const I& a) {
    F r;
    for (int q = 0; q < 4; ++q) r.v[q] = vcvtq_f32_s32(a.v[q]);
    return r;
  }
  static F load_s16(const uint16_t* p) {
    F r;
    for (int q = 0; q < 4; ++q) r.v[q] = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p + 4 * q)));
    return r;
  }
  static F load_s32(const float* p) { return {{vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12)}}; }
  static F mul(const F& a, const F& b) {
    F r;
    for (int q = 0; q < 4; ++q) r.v[q] = vmulq_f32(a.v[q], b.v[q]);
    return r;
  }
  static F sub(const F& a, const F& b) {
    F r;
    for (int q = 0; q < 4; ++q) r.v[q] = vsubq_f32(a.v[q], b.v[q]);
    return r;
  }
  static F fma(const F& a, const F& b, const F& c) {
    F r;
    for (int q = 0; q < 4; ++q) r.v[q] = vfmaq_f32(c.v[q], a.v[q], b.v[q]);
    return r;
  }
  static void store(float* p, const F& a) {
    for (int q = 0; q < 4; ++q) vst1q_f32(p + 4 * q, a.v[q]);
  }

  static R load_raw(const uint8_t* p) { return {{vld1q_u8(p), vld1q_u8(p + 16), vld1q_u8(p + 32), vld1q_u8(p + 48)}}; }
  static F code_f(const R& raw, int j, bool nibbles) {
    const int32x4_t shift = vdupq_n_s32(-(8 * (j & 3) + (nibbles && j >= 4 ? 4 : 0)));
    const uint32x4_t mask = vdupq_n_u32(nibbles ? 0xF : 0xFF);
    F r;
    for (int q = 0; q < 4; ++q)
      r.v[q] = vcvtq_f32_u32(vandq_u32(vshlq_u32(vreinterpretq_u32_u8(raw.v[q]), shift), mask));
    return r;
  }

  // Block-form weights (block_kernel_body.hpp): codes below 64 are valid signed bytes, so sdot /
  // smull take them as they are; sub-scales and mins widen to int32 lanes (vmla).
  static constexpr int blk_mr = 4, blk_nb = 1, blk_gemv_nb = 2, blkf_mr = 2, blkf_nb = 1;
  static constexpr bool blk_all_configs = false, blk_wide_sub = false;
  using C = W;
  using Z = int32x4_t;
  using Sc = I;
  struct Pr { I m0, m1; };
  static C c_load(const uint8_t* p) {
    C c;
    for (int q = 0; q < 4; ++q) c.v[q] = vreinterpretq_s8_u8(vld1q_u8(p + 16 * q));
    return c;
  }
  static void c_store(uint8_t* p, const C& c) {
    for (int q = 0; q < 4; ++q) vst1q_u8(p + 16 * q, vreinterpretq_u8_s8(c.v[q]));
  }
  template <int From, int To, int Width>
  static C c_move(const C& x) {
    const uint8x16_t mask = vdupq_n_u8(uint8_t(((1 << Width) - 1) << To));
    C r;
    for (int q = 0; q < 4; ++q) {
      uint8x16_t v = vreinterpretq_u8_s8(x.v[q]);
      if constexpr (From > To) v = vshrq_n_u8(v, From - To);
      if constexpr (From < To) v = vshlq_n_u8(v, To - From);
      r.v[q] = vreinterpretq_s8_u8(vandq_u8(v, mask));
    }
    return r;
  }
  static C c_or(const C& a, const C& b) {
    C r;
    for (int q = 0; q < 4; ++q) r.v[q] = vorrq_s8(a.v[q], b.v[q]);
    return r;
  }
  static Z z_load(int32_t p) {
    return vdupq_n_s32(int32_t(int16_t(uint32_t(p) & 0xFFFFu)) + int32_t(int16_t(uint32_t(p) >> 16)));
  }
  static Sc sc_unit() { return set_i(1); }
  static I widen(int8x16_t b) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_high_s8(b);
    return {{vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)), vmovl_high_s16(hi)}};
  }
  static void sc_load_pairs(const uint8_t* p, bool nibbles, Sc& s0, Sc& s1) {
    uint8x16x2_t v = vld2q_u8(p);  // val[i]: sub-block i of the pair, lanes 0..15
    if (nibbles) {
      v.val[0] = vandq_u8(v.val[0], vdupq_n_u8(0x0F));
      v.val[1] = vandq_u8(v.val[1], vdupq_n_u8(0x0F));
    }
    s0 = widen(vreinterpretq_s8_u8(v.val[0]));
    s1 = widen(vreinterpretq_s8_u8(v.val[1]));
  }
  static Pr mn_load_pairs(const uint8_t* p, bool nibbles) {
    uint8x16x2_t v = vld2q_u8(p);
    if (nibbles) {
      v.val[0] = vshrq_n_u8(v.val[0], 4);
      v.val[1] = vshrq_n_u8(v.val[1], 4);
    }
    return {widen(vreinterpretq_s8_u8(v.val[0])), widen(vreinterpretq_s8_u8(v.val[1]))};
  }
  static void sc_mn_load_pairs(const uint8_t* p, bool nibbles, size_t mn_offset, Sc& s0, Sc& s1, Pr& pr) {
    sc_load_pairs(p, nibbles, s0, s1);
    pr = mn_load_pairs(nibbles ? p : p + mn_offset, nibbles);
  }
  static void fold_pairs(I& acc, const int16_t* cs, const Pr& p) {
    for (int q = 0; q < 4; ++q) acc.v[q] = vmlaq_n_s32(vmlaq_n_s32(acc.v[q], p.m0.v[q], cs[0]), p.m1.v[q], cs[1]);
  }
  static I sc_i(const Sc& s) { return s; }
  static void pr_split(const Pr& p, I& a, I& b) {
    a = p.m0;
    b = p.m1;
  }
  static F load_half(const uint8_t* p) {
    F r;
    for (int q = 0; q < 4; ++q) r.v[q] = vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p + 8 * q)));
    return r;
  }
  static I add(const I& a, const I& b) {
    I r;
    for (int q = 0; q < 4; ++q) r.v[q] = vaddq_s32(a.v[q], b.v[q]);
    return r;
  }
  /// acc += (s - z) * sc, s already widened to int32 lanes.
  static void fold_i(I& acc, const I& s, const int32x4_t* z, const Sc& sc) {
    for (int q = 0; q < 4; ++q) acc.v[q] = vmlaq_s32(acc.v[q], z ? vsubq_s32(s.v[q], *z) : s.v[q], sc.v[q]);
  }

  static void range(const float* x, Index n, float& mn, float& mx) noexcept {
    float32x4_t lo = vdupq_n_f32(x[0]), hi = lo;
    Index i = 0;
    for (; i + 4 <= n; i += 4) {
      const float32x4_t v = vld1q_f32(x + i);
      lo = vminq_f32(lo, v);
      hi = vmaxq_f32(hi, v);
    }
    mn = vminvq_f32(lo);
    mx = vmaxvq_f32(hi);
    for (; i < n; ++i) {
      mn = std::min(mn, x[i]);
      mx = std::max(mx, x[i]);
    }
  }
  // Same operations as quantize_value: x * inv, round to nearest even, + zp, clamp, truncate.
  static void quantize_row(const float* x, Index n, float inv, int zp, int qmin, int qmax, int shift,
                           int8_t* out) noexcept {
    const float32x4_t vinv = vdupq_n_f32(inv), vzp = vdupq_n_f32(float(zp)), vlo = vdupq_n_f32(float(qmin)),
                      vhi = vdupq_n_f32(float(qmax));
    Index i = 0;
    for (; i + 4 <= n; i += 4) {
      float32x4_t q = vaddq_f32(vrndnq_f32(vmulq_f32(vld1q_f32(x + i), vinv)), vzp);
      q = vminq_f32(vmaxq_f32(q, vlo), vhi);
      int32_t c[4];
      vst1q_s32(c, vsubq_s32(vcvtq_s32_f32(q), vdupq_n_s32(shift)));
      for (int j = 0; j < 4; ++j) out[i + j] = int8_t(c[j]);
    }
    for (; i < n; ++i) out[i] = int8_t(quantize_value(x[i], inv, zp, qmin, qmax) - shift);
  }
};

}  // namespace lowbit::kernels::neon_common

namespace lowbit::kernels::neon {

// Plain NEON: smull into int16 (|(u - 128) * c| <= 2^14, exact), pairwise-accumulated into two
// int32 partials per register; finish() adds the pairs so lane i holds bytes 4i..4i+3.
struct V : neon_common::NeonBase {
  struct Acc { int32x4_t lo[4], hi[4]; };
  static Acc zero() {
    Acc a;
    for (int q = 0; q < 4; ++q) a.lo[q] = a.hi[q] = vdupq_n_s32(0);
    return a;
  }
  static void dot8(Acc& acc, const W& w, A a) {
    for (int q = 0; q < 4; ++q) {
      acc.lo[q] = vpadalq_s16(acc.lo[q], vmull_s8(vget_low_s8(w.v[q]), vget_low_s8(a)));
      acc.hi[q] = vpadalq_s16(acc.hi[q], vmull_high_s8(w.v[q], a));
    }
  }
  static void dot4(Acc& acc, const W& w, A a) { dot8(acc, w, a); }
  static I finish(const Acc& a) {
    I r;
    for (int q = 0; q < 4; ++q) r.v[q] = vpaddq_s32(a.lo[q], a.hi[q]);
    return r;
  }
  using Sub = Acc;
  static Sub sub_zero() { return zero(); }
  static void sub_dot(Sub& s, const C& c, A a) { dot8(s, c, a); }
  static Sub sub_first(const C& c, A a) {
    Sub s = zero();
    dot8(s, c, a);
    return s;
  }
  static void fold(I& acc, const Sub& s, const Sc& sc) { fold_i(acc, finish(s), nullptr, sc); }
  static void fold_z(I& acc, const Sub& s, Z z, const Sc& sc) { fold_i(acc, finish(s), &z, sc); }
};

#include <lowbit/gemm/kernel_body.hpp>
#include <lowbit/gemm/block_kernel_body.hpp>

}  // namespace lowbit::kernels::neon

#pragma GCC push_options
// arm_neon.h declares vdotq_s32 for armv8.2-a+dotprod; only CPUs reporting dotprod (all v8.2+) run this.
#pragma GCC target("arch=armv8.2-a+dotprod")

namespace lowbit::kernels::neon_dotprod {

// sdot: each int32 lane accumulates the dot product of its 4 signed bytes.
struct V : neon_common::NeonBase {
  using Acc = I;
  static Acc zero() { return set_i(0); }
  static void dot8(Acc& acc, const W& w, A a) {
    for (int q = 0; q < 4; ++q) acc.v[q] = vdotq_s32(acc.v[q], w.v[q], a);
  }
  static void dot4(Acc& acc, const W& w, A a) { dot8(acc, w, a); }
  static I finish(const Acc& a) { return a; }
  using Sub = Acc;
  static Sub sub_zero() { return zero(); }
  static void sub_dot(Sub& s, const C& c, A a) { dot8(s, c, a); }
  static Sub sub_first(const C& c, A a) {
    Sub s = zero();
    dot8(s, c, a);
    return s;
  }
  static void fold(I& acc, const Sub& s, const Sc& sc) { fold_i(acc, finish(s), nullptr, sc); }
  static void fold_z(I& acc, const Sub& s, Z z, const Sc& sc) { fold_i(acc, finish(s), &z, sc); }
};

#include <lowbit/gemm/kernel_body.hpp>
#include <lowbit/gemm/block_kernel_body.hpp>

}  // namespace lowbit::kernels::neon_dotprod

#pragma GCC pop_options

#endif  // LOWBIT_AARCH64
