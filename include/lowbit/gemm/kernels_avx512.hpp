// kernels_avx512.hpp: AVX-512 VNNI kernels (vpdpbusd: u8 weights x s8 activations, 16 lanes of 4).
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
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
// GCC 12 flags the deliberately undefined vectors inside its own intrinsics (_mm512_undefined_*).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#endif

namespace lowbit::kernels::avx512_vnni {

struct V {
  // 6 x 4 blocks of int32 accumulators = 24 zmm; grouped tiles also keep float sums.
  static constexpr int int_mr = 6, int_nb = 4, grouped_mr = 4, grouped_nb = 2, f32_mr = 4, f32_nb = 2;
  static constexpr int w8_bias = 0;
  using Acc = __m512i;
  using W = __m512i;
  using A = __m512i;
  using I = __m512i;
  using F = __m512;
  using R = __m512i;

  static Acc zero() { return _mm512_setzero_si512(); }
  static W load8(const uint8_t* p) { return _mm512_loadu_si512(p); }
  static void load4(const uint8_t* p, W& lo, W& hi) {
    const __m512i b = _mm512_loadu_si512(p), mask = _mm512_set1_epi8(0x0F);
    lo = _mm512_and_si512(b, mask);
    hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), mask);
  }
  static A bcast(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
  }
  // vpdpbusd: unsigned bytes (weights, < 256) times signed bytes (activations); no saturation.
  static void dot8(Acc& acc, W w, A a) { acc = _mm512_dpbusd_epi32(acc, w, a); }
  static void dot4(Acc& acc, W w, A a) { acc = _mm512_dpbusd_epi32(acc, w, a); }
  static I finish(Acc a) { return a; }

  static I set_i(int32_t x) { return _mm512_set1_epi32(x); }
  static I load_zw(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static I load_i(const int32_t* p) { return _mm512_loadu_si512(p); }
  static I sub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I mul(I a, I b) { return _mm512_mullo_epi32(a, b); }

  static F zero_f() { return _mm512_setzero_ps(); }
  static F set_f(float x) { return _mm512_set1_ps(x); }
  static F to_f(I a) { return _mm512_cvtepi32_ps(a); }
  static F load_s16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static F load_s32(const float* p) { return _mm512_loadu_ps(p); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, F a) { _mm512_storeu_ps(p, a); }

  static R load_raw(const uint8_t* p) { return _mm512_loadu_si512(p); }
  static F code_f(R raw, int j, bool nibbles) {
    const int shift = 8 * (j & 3) + (nibbles && j >= 4 ? 4 : 0);
    const __m512i v = _mm512_srl_epi32(raw, _mm_cvtsi32_si128(shift));
    return _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(nibbles ? 0xF : 0xFF)));
  }
};

#include <lowbit/gemm/kernel_body.hpp>

}  // namespace lowbit::kernels::avx512_vnni

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // LOWBIT_X86
