// kernels_scalar.hpp: the portable path: the blocked kernels over plain arrays of 16 lanes.
#pragma once

#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/fp16.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace lowbit::kernels::scalar {

struct V {
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
    for (int i = 0; i < 16; ++i) r.v[i] = detail::half_to_float(p[i]);
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
};

#include <lowbit/gemm/kernel_body.hpp>

}  // namespace lowbit::kernels::scalar
