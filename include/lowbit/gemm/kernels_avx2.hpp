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
#include <utility>

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
  static void store_i(int32_t* p, const I& a) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), a.v[0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 8), a.v[1]);
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

  static void range(const float* x, Index n, float& mn, float& mx) noexcept {
    __m256 lo = _mm256_set1_ps(x[0]), hi = lo;
    Index i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      lo = _mm256_min_ps(lo, v);
      hi = _mm256_max_ps(hi, v);
    }
    alignas(32) float l[8], h[8];
    _mm256_store_ps(l, lo);
    _mm256_store_ps(h, hi);
    mn = l[0];
    mx = h[0];
    for (int j = 1; j < 8; ++j) {
      mn = std::min(mn, l[j]);
      mx = std::max(mx, h[j]);
    }
    for (; i < n; ++i) {
      mn = std::min(mn, x[i]);
      mx = std::max(mx, x[i]);
    }
  }
  // Same operations as quantize_value: x * inv, round to nearest even, + zp, clamp, truncate.
  static void quantize_row(const float* x, Index n, float inv, int zp, int qmin, int qmax, int shift,
                           int8_t* out) noexcept {
    const __m256 vinv = _mm256_set1_ps(inv), vzp = _mm256_set1_ps(float(zp)), vlo = _mm256_set1_ps(float(qmin)),
                 vhi = _mm256_set1_ps(float(qmax));
    const __m256i vshift = _mm256_set1_epi32(shift);
    Index i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
      __m256 q = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vzp);
      q = _mm256_min_ps(_mm256_max_ps(q, vlo), vhi);
      alignas(32) int32_t c[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(c), _mm256_sub_epi32(_mm256_cvttps_epi32(q), vshift));
      for (int j = 0; j < 8; ++j) out[i + j] = int8_t(c[j]);
    }
    for (; i < n; ++i) out[i] = int8_t(quantize_value(x[i], inv, zp, qmin, qmax) - shift);
  }

  static R load_raw(const uint8_t* p) { return {{load(p), load(p + 32)}}; }
  static F code_f(const R& raw, int j, bool nibbles) {
    const __m128i shift = _mm_cvtsi32_si128(8 * (j & 3) + (nibbles && j >= 4 ? 4 : 0));
    const __m256i mask = _mm256_set1_epi32(nibbles ? 0xF : 0xFF);
    return {{_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(raw.v[0], shift), mask)),
             _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(raw.v[1], shift), mask))}};
  }

  // Block-form weights (block_kernel_body.hpp). Codes below 64 times activations: vpmaddubsw
  // pairs, added in int16 over a unit (BlockLayout::unit_cols keeps them below 32768), widened
  // by vpmaddwd with the sub-scale pair (sc, sc) of each lane, so the scale costs nothing extra.
  static constexpr int blk_mr = 2, blk_nb = 1, blk_gemv_nb = 1, blkf_mr = 2, blkf_nb = 1;
  static constexpr bool blk_all_configs = false, blk_wide_sub = false;
  using C = R;
  struct Sub { __m256i v[2]; };  // int16 pair sums
  using Z = __m256i;             // zero * sum c per int16 element
  struct Sc { __m256i v[2]; };   // (sc, sc) int16 per lane
  struct Pr { __m256i v[2]; };   // (mn_0, mn_1) int16 per lane
  static C c_load(const uint8_t* p) { return load_raw(p); }
  static void c_store(uint8_t* p, const C& c) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), c.v[0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 32), c.v[1]);
  }
  template <int From, int To, int Width>
  static C c_move(const C& x) {
    const __m256i mask = _mm256_set1_epi8(char(((1 << Width) - 1) << To));
    C r;
    for (int h = 0; h < 2; ++h) {
      __m256i v = x.v[h];
      if constexpr (From > To) v = _mm256_srli_epi16(v, From - To);
      if constexpr (From < To) v = _mm256_slli_epi16(v, To - From);
      r.v[h] = _mm256_and_si256(v, mask);
    }
    return r;
  }
  static C c_or(const C& a, const C& b) { return {{_mm256_or_si256(a.v[0], b.v[0]), _mm256_or_si256(a.v[1], b.v[1])}}; }
  static Sub sub_zero() { return {{_mm256_setzero_si256(), _mm256_setzero_si256()}}; }
  static void sub_dot(Sub& s, const C& c, A a) {
    for (int h = 0; h < 2; ++h) s.v[h] = _mm256_add_epi16(s.v[h], _mm256_maddubs_epi16(c.v[h], a));
  }
  static Sub sub_first(const C& c, A a) { return {{_mm256_maddubs_epi16(c.v[0], a), _mm256_maddubs_epi16(c.v[1], a)}}; }
  static Z z_load(int32_t p) { return _mm256_set1_epi32(p); }
  static Sc sc_unit() { return {{_mm256_set1_epi16(1), _mm256_set1_epi16(1)}}; }
  static __m256i pair_words(const uint8_t* p, bool nibbles, bool high) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if (!nibbles) return _mm256_cvtepi8_epi16(b);
    if (high) b = _mm_srli_epi16(b, 4);
    return _mm256_cvtepu8_epi16(_mm_and_si128(b, _mm_set1_epi8(0x0F)));
  }
  static void sc_load_pairs(const uint8_t* p, bool nibbles, Sc& s0, Sc& s1) {
    const __m256i even = _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9,
                                          8, 9, 12, 13, 12, 13);
    const __m256i odd = _mm256_setr_epi8(2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15, 2, 3, 2, 3, 6, 7, 6, 7,
                                         10, 11, 10, 11, 14, 15, 14, 15);
    for (int h = 0; h < 2; ++h) {
      const __m256i w = pair_words(p + 16 * h, nibbles, false);  // lane l: (sc_0, sc_1)
      s0.v[h] = _mm256_shuffle_epi8(w, even);
      s1.v[h] = _mm256_shuffle_epi8(w, odd);
    }
  }
  static Pr mn_load_pairs(const uint8_t* p, bool nibbles) {
    return {{pair_words(p, nibbles, true), pair_words(p + 16, nibbles, true)}};
  }
  static void sc_mn_load_pairs(const uint8_t* p, bool nibbles, size_t mn_offset, Sc& s0, Sc& s1, Pr& pr) {
    if (!nibbles) {
      sc_load_pairs(p, false, s0, s1);
      pr = mn_load_pairs(p + mn_offset, false);
      return;
    }
    const __m256i even = _mm256_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13, 0, 1, 0, 1, 4, 5, 4, 5, 8, 9,
                                          8, 9, 12, 13, 12, 13);
    const __m256i odd = _mm256_setr_epi8(2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15, 2, 3, 2, 3, 6, 7, 6, 7,
                                         10, 11, 10, 11, 14, 15, 14, 15);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int h = 0; h < 2; ++h) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h));
      const __m256i w = _mm256_cvtepu8_epi16(_mm_and_si128(b, m4));
      s0.v[h] = _mm256_shuffle_epi8(w, even);
      s1.v[h] = _mm256_shuffle_epi8(w, odd);
      pr.v[h] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), m4));
    }
  }
  static void fold(I& acc, const Sub& s, const Sc& sc) {
    for (int h = 0; h < 2; ++h) acc.v[h] = _mm256_add_epi32(acc.v[h], _mm256_madd_epi16(s.v[h], sc.v[h]));
  }
  static void fold_z(I& acc, const Sub& s, Z z, const Sc& sc) {
    for (int h = 0; h < 2; ++h)
      acc.v[h] = _mm256_add_epi32(acc.v[h], _mm256_madd_epi16(_mm256_sub_epi16(s.v[h], z), sc.v[h]));
  }
  static void fold_pairs(I& acc, const int16_t* cs, const Pr& p) {
    int32_t v;
    std::memcpy(&v, cs, 4);
    const __m256i c = _mm256_set1_epi32(v);
    for (int h = 0; h < 2; ++h) acc.v[h] = _mm256_add_epi32(acc.v[h], _mm256_madd_epi16(p.v[h], c));
  }
  static I sc_i(const Sc& s) { return {{_mm256_srai_epi32(s.v[0], 16), _mm256_srai_epi32(s.v[1], 16)}}; }
  static void pr_split(const Pr& p, I& a, I& b) {
    for (int h = 0; h < 2; ++h) {
      a.v[h] = _mm256_srai_epi32(_mm256_slli_epi32(p.v[h], 16), 16);
      b.v[h] = _mm256_srai_epi32(p.v[h], 16);
    }
  }
  static F load_half(const uint8_t* p) {
    return {{_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
             _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)))}};
  }
  static I add(const I& a, const I& b) { return {{_mm256_add_epi32(a.v[0], b.v[0]), _mm256_add_epi32(a.v[1], b.v[1])}}; }
};

#include <lowbit/gemm/kernel_body.hpp>
#include <lowbit/gemm/block_kernel_body.hpp>

}  // namespace lowbit::kernels::avx2

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // LOWBIT_X86
