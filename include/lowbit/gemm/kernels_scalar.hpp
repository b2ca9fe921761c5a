// kernels_scalar.hpp: the portable path: the blocked kernels over plain arrays of 16 lanes.
#pragma once

#include <lowbit/core/half.hpp>
#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/block_layout.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

namespace lowbit::kernels::scalar {

#define LOWBIT_SCALAR_OP __attribute__((noinline))

struct V : detail::ScalarRowOps {
  static constexpr int int_mr = 4, int_nb = 1, grouped_mr = 4, grouped_nb = 1, f32_mr = 4, f32_nb = 1;
  static constexpr int w8_bias = 0;
  struct I { int32_t v[16]; };
  struct F { float v[16]; };
  struct W { uint8_t b[64]; };
  using Acc = I;
  using R = W;
  using A = const int8_t*;

  static Acc zero() { return I{}; }
  static W load8(const uint8_t* p) {
    W w;
    std::copy(p, p + 64, w.b);
    return w;
  }
  static void load4(const uint8_t* p, W& lo, W& hi) {
    for (int i = 0; i < 64; ++i) {
      lo.b[i] = p[i] & 0xF;
      hi.b[i] = uint8_t(p[i] >> 4);
    }
  }
  static A bcast(const int8_t* p) { return p; }
  static void dot8(Acc& acc, const W& w, A a) {
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 4; ++j) acc.v[i] += int32_t(w.b[4 * i + j]) * a[j];
  }
  static void dot4(Acc& acc, const W& w, A a) { dot8(acc, w, a); }
  static I finish(const Acc& a) { return a; }

  static I set_i(int32_t x) {
    I r;
    std::fill(r.v, r.v + 16, x);
    return r;
  }
  static I load_zw(const uint8_t* p) {
    I r;
    for (int i = 0; i < 16; ++i) r.v[i] = p[i];
    return r;
  }
  static I load_i(const int32_t* p) {
    I r;
    std::copy(p, p + 16, r.v);
    return r;
  }
  static void store_i(int32_t* p, const I& a) { std::copy(a.v, a.v + 16, p); }
  static I sub(const I& a, const I& b) {
    I r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] - b.v[i];
    return r;
  }
  static I mul(const I& a, const I& b) {
    I r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] * b.v[i];
    return r;
  }

  static F zero_f() { return set_f(0.0f); }
  static F set_f(float x) {
    F r;
    std::fill(r.v, r.v + 16, x);
    return r;
  }
  static F to_f(const I& a) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = float(a.v[i]);
    return r;
  }
  static F load_s16(const uint16_t* p) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = lowbit::half_to_float(p[i]);
    return r;
  }
  static F load_s32(const float* p) {
    F r;
    std::copy(p, p + 16, r.v);
    return r;
  }
  static F mul(const F& a, const F& b) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] * b.v[i];
    return r;
  }
  static F sub(const F& a, const F& b) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] - b.v[i];
    return r;
  }
  static F fma(const F& a, const F& b, const F& c) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return r;
  }
  static void store(float* p, const F& a) { std::copy(a.v, a.v + 16, p); }

  static R load_raw(const uint8_t* p) { return load8(p); }
  static F code_f(const R& raw, int j, bool nibbles) {
    F r;
    for (int i = 0; i < 16; ++i) {
      const uint8_t b = raw.b[4 * i + (j & 3)];
      r.v[i] = float(nibbles ? (j < 4 ? b & 0xF : b >> 4) : b);
    }
    return r;
  }

  // Block-form weights (block_kernel_body.hpp): plain int32 lanes. The lane loops stay out of
  // line (LOWBIT_SCALAR_OP): the unrolled driver then compiles quickly, and this path has no speed target.
  static constexpr int blk_mr = 1, blk_nb = 1, blk_gemv_nb = 1, blkf_mr = 1, blkf_nb = 1;
  static constexpr bool blk_all_configs = true, blk_wide_sub = false;
  using C = W;
  using Sub = I;
  using Z = int32_t;
  using Sc = I;
  struct Pr { I m0, m1; };
  LOWBIT_SCALAR_OP static C c_load(const uint8_t* p) { return load8(p); }
  LOWBIT_SCALAR_OP static void c_store(uint8_t* p, const C& c) { std::copy(c.b, c.b + 64, p); }
  template <int From, int To, int Width>
  LOWBIT_SCALAR_OP static C c_move(const C& x) {
    C r;
    for (int i = 0; i < 64; ++i) r.b[i] = uint8_t(((x.b[i] >> From) & ((1 << Width) - 1)) << To);
    return r;
  }
  LOWBIT_SCALAR_OP static C c_or(const C& a, const C& b) {
    C r;
    for (int i = 0; i < 64; ++i) r.b[i] = uint8_t(a.b[i] | b.b[i]);
    return r;
  }
  static Sub sub_zero() { return I{}; }
  LOWBIT_SCALAR_OP static void sub_dot(Sub& s, const C& c, A a) { dot8(s, c, a); }
  static Sub sub_first(const C& c, A a) {
    Sub s{};
    sub_dot(s, c, a);
    return s;
  }
  static Z z_load(int32_t p) { return int32_t(int16_t(uint32_t(p) & 0xFFFFu)) + int32_t(int16_t(uint32_t(p) >> 16)); }
  static Sc sc_unit() { return set_i(1); }
  static int pair_value(uint8_t b, bool nibbles, bool high) {
    return nibbles ? (high ? b >> 4 : b & 0xF) : int(int8_t(b));
  }
  LOWBIT_SCALAR_OP static void sc_load_pairs(const uint8_t* p, bool nibbles, Sc& s0, Sc& s1) {
    for (int i = 0; i < 16; ++i) {
      s0.v[i] = pair_value(p[2 * i], nibbles, false);
      s1.v[i] = pair_value(p[2 * i + 1], nibbles, false);
    }
  }
  LOWBIT_SCALAR_OP static Pr mn_load_pairs(const uint8_t* p, bool nibbles) {
    Pr r;
    for (int i = 0; i < 16; ++i) {
      r.m0.v[i] = pair_value(p[2 * i], nibbles, true);
      r.m1.v[i] = pair_value(p[2 * i + 1], nibbles, true);
    }
    return r;
  }
  static void sc_mn_load_pairs(const uint8_t* p, bool nibbles, size_t mn_offset, Sc& s0, Sc& s1, Pr& pr) {
    sc_load_pairs(p, nibbles, s0, s1);
    pr = mn_load_pairs(nibbles ? p : p + mn_offset, nibbles);
  }
  LOWBIT_SCALAR_OP static void fold(I& acc, const Sub& s, const Sc& sc) {
    for (int i = 0; i < 16; ++i) acc.v[i] += s.v[i] * sc.v[i];
  }
  LOWBIT_SCALAR_OP static void fold_z(I& acc, const Sub& s, Z z, const Sc& sc) {
    for (int i = 0; i < 16; ++i) acc.v[i] += (s.v[i] - z) * sc.v[i];
  }
  LOWBIT_SCALAR_OP static void fold_pairs(I& acc, const int16_t* cs, const Pr& p) {
    for (int i = 0; i < 16; ++i) acc.v[i] += p.m0.v[i] * cs[0] + p.m1.v[i] * cs[1];
  }
  static I sc_i(const Sc& s) { return s; }
  static void pr_split(const Pr& p, I& a, I& b) {
    a = p.m0;
    b = p.m1;
  }
  LOWBIT_SCALAR_OP static F load_half(const uint8_t* p) {
    F r;
    for (int i = 0; i < 16; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      r.v[i] = detail::half_bits_to_float(h);
    }
    return r;
  }
  LOWBIT_SCALAR_OP static I add(const I& a, const I& b) {
    I r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
};

#include <lowbit/gemm/kernel_body.hpp>
#include <lowbit/gemm/block_kernel_body.hpp>

#undef LOWBIT_SCALAR_OP

}  // namespace lowbit::kernels::scalar
