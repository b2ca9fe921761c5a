// kernels_avx2.hpp: AVX2 kernels; vpmaddubsw made saturation-safe (8-bit codes split in 7 + 1 bits).
#pragma once

#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#if defined(LOWBIT_X86)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
// GCC 12 flags the deliberately undefined vectors inside its own intrinsics (_mm512_undefined_*).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC target("avx2,fma,f16c")
#endif

namespace lowbit::kernels::avx2 {

// A block of 16 lanes is two ymm registers: lanes 0..7 and 8..15.
struct V {
  static constexpr int int_mr = 3, int_nb = 1, grouped_mr = 2, grouped_nb = 1, f32_mr = 2, f32_nb = 1;
  static constexpr int w8_bias = 0;
  struct I { __m256i v[2]; };
  struct F { __m256 v[2]; };
  // 8-bit codes u = lo + 128 * hi with lo < 128: vpmaddubsw(lo, a) pairs stay within
  // 2 * 127 * 128 < 32767 and vpmaddubsw(hi, a) within 2 * 128, so nothing saturates (a naive
  // vpmaddubsw(u, a) reaches 2 * 255 * 128 and clips). 4-bit codes need no split.
  struct W { __m256i lo[2], hi[2]; };
  struct R { __m256i v[2]; };
  using Acc = I;
  using A = __m256i;

  static Acc zero() { return {{_mm256_setzero_si256(), _mm256_setzero_si256()}}; }
  static __m256i load(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static W load8(const uint8_t* p) {
    const __m256i m7 = _mm256_set1_epi8(0x7F), m1 = _mm256_set1_epi8(1);
    W w;
    for (int h = 0; h < 2; ++h) {
      const __m256i b = load(p + 32 * h);
      w.lo[h] = _mm256_and_si256(b, m7);
      w.hi[h] = _mm256_and_si256(_mm256_srli_epi16(b, 7), m1);
    }
    return w;
  }
  static void load4(const uint8_t* p, W& lo, W& hi) {
    const __m256i m = _mm256_set1_epi8(0x0F);
    for (int h = 0; h < 2; ++h) {
      const __m256i b = load(p + 32 * h);
      lo.lo[h] = _mm256_and_si256(b, m);
      hi.lo[h] = _mm256_and_si256(_mm256_srli_epi16(b, 4), m);
    }
  }
  static A bcast(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
  }
  static void dot8(Acc& acc, const W& w, A a) {
    const __m256i ones = _mm256_set1_epi16(1), x128 = _mm256_set1_epi16(128);
    for (int h = 0; h < 2; ++h) {
      const __m256i lo = _mm256_madd_epi16(_mm256_maddubs_epi16(w.lo[h], a), ones);
      const __m256i hi = _mm256_madd_epi16(_mm256_maddubs_epi16(w.hi[h], a), x128);
      acc.v[h] = _mm256_add_epi32(acc.v[h], _mm256_add_epi32(lo, hi));
    }
  }
  static void dot4(Acc& acc, const W& w, A a) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int h = 0; h < 2; ++h)
      acc.v[h] = _mm256_add_epi32(acc.v[h], _mm256_madd_epi16(_mm256_maddubs_epi16(w.lo[h], a), ones));
  }
  static I finish(const Acc& a) { return a; }

  static I set_i(int32_t x) { return {{_mm256_set1_epi32(x), _mm256_set1_epi32(x)}}; }
  static I load_zw(const uint8_t* p) {
    return {{_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))),
             _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8)))}};
  }
  static I load_i(const int32_t* p) {
    return {{_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)),
             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8))}};
  }
  static I sub(const I& a, const I& b) { return {{_mm256_sub_epi32(a.v[0], b.v[0]), _mm256_sub_epi32(a.v[1], b.v[1])}}; }
  static I mul(const I& a, const I& b) { return {{_mm256_mullo_epi32(a.v[0], b.v[0]), _mm256_mullo_epi32(a.v[1], b.v[1])}}; }

  static F zero_f() { return {{_mm256_setzero_ps(), _mm256_setzero_ps()}}; }
  static F set_f(float x) { return {{_mm256_set1_ps(x), _mm256_set1_ps(x)}}; }
  static F to_f(const I& a) { return {{_mm256_cvtepi32_ps(a.v[0]), _mm256_cvtepi32_ps(a.v[1])}}; }
  static F load_s16(const uint16_t* p) {
    return {{_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
             _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))}};
  }
  static F load_s32(const float* p) { return {{_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}}; }
  static F mul(const F& a, const F& b) { return {{_mm256_mul_ps(a.v[0], b.v[0]), _mm256_mul_ps(a.v[1], b.v[1])}}; }
  static F sub(const F& a, const F& b) { return {{_mm256_sub_ps(a.v[0], b.v[0]), _mm256_sub_ps(a.v[1], b.v[1])}}; }
  static F fma(const F& a, const F& b, const F& c) {
    return {{_mm256_fmadd_ps(a.v[0], b.v[0], c.v[0]), _mm256_fmadd_ps(a.v[1], b.v[1], c.v[1])}};
  }
  static void store(float* p, const F& a) {
    _mm256_storeu_ps(p, a.v[0]);
    _mm256_storeu_ps(p + 8, a.v[1]);
  }

  static R load_raw(const uint8_t* p) { return {{load(p), load(p + 32)}}; }
  static F code_f(const R& raw, int j, bool nibbles) {
    const __m128i shift = _mm_cvtsi32_si128(8 * (j & 3) + (nibbles && j >= 4 ? 4 : 0));
    const __m256i mask = _mm256_set1_epi32(nibbles ? 0xF : 0xFF);
    return {{_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(raw.v[0], shift), mask)),
             _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(raw.v[1], shift), mask))}};
  }
};

#include <lowbit/gemm/kernel_body.hpp>

}  // namespace lowbit::kernels::avx2

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // LOWBIT_X86
