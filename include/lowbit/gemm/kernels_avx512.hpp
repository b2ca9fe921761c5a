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
#include <utility>

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
  static constexpr int int_mr = 6, int_nb = 4, grouped_mr = 4, grouped_nb = 4, f32_mr = 4, f32_nb = 2;
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
  static void store_i(int32_t* p, I a) { _mm512_storeu_si512(p, a); }
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

  static void range(const float* x, Index n, float& mn, float& mx) noexcept {
    __m512 lo = _mm512_set1_ps(x[0]), hi = lo;
    Index i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m512 v = _mm512_loadu_ps(x + i);
      lo = _mm512_min_ps(lo, v);
      hi = _mm512_max_ps(hi, v);
    }
    if (i < n) {
      const __mmask16 k = __mmask16((1u << (n - i)) - 1u);
      lo = _mm512_mask_min_ps(lo, k, lo, _mm512_maskz_loadu_ps(k, x + i));
      hi = _mm512_mask_max_ps(hi, k, hi, _mm512_maskz_loadu_ps(k, x + i));
    }
    mn = _mm512_reduce_min_ps(lo);
    mx = _mm512_reduce_max_ps(hi);
  }
  // Same operations as quantize_value: x * inv, round to nearest even, + zp, clamp, truncate.
  static void quantize_row(const float* x, Index n, float inv, int zp, int qmin, int qmax, int shift,
                           int8_t* out) noexcept {
    const __m512 vinv = _mm512_set1_ps(inv), vzp = _mm512_set1_ps(float(zp)), vlo = _mm512_set1_ps(float(qmin)),
                 vhi = _mm512_set1_ps(float(qmax));
    const __m512i vshift = _mm512_set1_epi32(shift);
    for (Index i = 0; i < n; i += 16) {
      const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1u);
      const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vinv);
      __m512 q = _mm512_add_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vzp);
      q = _mm512_min_ps(_mm512_max_ps(q, vlo), vhi);
      const __m512i c = _mm512_sub_epi32(_mm512_cvttps_epi32(q), vshift);
      _mm_mask_storeu_epi8(out + i, k, _mm512_cvtepi32_epi8(c));
    }
  }

  static R load_raw(const uint8_t* p) { return _mm512_loadu_si512(p); }
  static F code_f(R raw, int j, bool nibbles) {
    const int shift = 8 * (j & 3) + (nibbles && j >= 4 ? 4 : 0);
    const __m512i v = _mm512_srl_epi32(raw, _mm_cvtsi32_si128(shift));
    return _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(nibbles ? 0xF : 0xFF)));
  }
  // Block-form weights (block_kernel_body.hpp): vpdpbusd sums codes times activations in int32
  // lanes over a whole sub-block (blk_wide_sub), then one vpmulld applies the lane's sub-scale;
  // sub-mins stay int16 pairs for vpmaddwd. The same integers as every path.
  static constexpr int blk_mr = 4, blk_nb = 2, blk_gemv_nb = 2, blkf_mr = 2, blkf_nb = 1;
  static constexpr bool blk_all_configs = false, blk_wide_sub = true;
  using C = __m512i;
  using Sub = __m512i;  // int32 sums per lane
  using Z = __m512i;    // zero * sum a per lane
  using Sc = __m512i;   // sc per int32 lane
  using Pr = __m512i;   // (mn_0, mn_1) int16 per lane
  static C c_load(const uint8_t* p) { return _mm512_loadu_si512(p); }
  static void c_store(uint8_t* p, C c) { _mm512_storeu_si512(p, c); }
  template <int From, int To, int Width>
  static C c_move(C x) {
    const __m512i mask = _mm512_set1_epi8(char(((1 << Width) - 1) << To));
    if constexpr (From > To) x = _mm512_srli_epi16(x, From - To);
    if constexpr (From < To) x = _mm512_slli_epi16(x, To - From);
    return _mm512_and_si512(x, mask);
  }
  static C c_or(C a, C b) { return _mm512_or_si512(a, b); }
  static Sub sub_zero() { return _mm512_setzero_si512(); }
  static void sub_dot(Sub& s, C c, A a) { s = _mm512_dpbusd_epi32(s, c, a); }
  static Sub sub_first(C c, A a) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), c, a); }
  // A zero pair holds the unit's two int16 halves (AVX2's pair sums); an int32 lane sums both.
  static Z z_load(int32_t p) {
    return _mm512_set1_epi32(int32_t(int16_t(uint32_t(p) & 0xFFFFu)) + int32_t(int16_t(uint32_t(p) >> 16)));
  }
  static Sc sc_unit() { return _mm512_set1_epi32(1); }
  static __m512i pair_words(const uint8_t* p, bool nibbles, bool high) {
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if (!nibbles) return _mm512_cvtepi8_epi16(b);
    if (high) b = _mm256_srli_epi16(b, 4);
    return _mm512_cvtepu8_epi16(_mm256_and_si256(b, _mm256_set1_epi8(0x0F)));
  }
  // Lane l's words (sc_0, sc_1), sign-extended into two int32 vectors.
  static void split_pairs(__m512i w, Sc& s0, Sc& s1) {
    s0 = _mm512_srai_epi32(_mm512_slli_epi32(w, 16), 16);
    s1 = _mm512_srai_epi32(w, 16);
  }
  static void sc_load_pairs(const uint8_t* p, bool nibbles, Sc& s0, Sc& s1) {
    split_pairs(pair_words(p, nibbles, false), s0, s1);
  }
  static Pr mn_load_pairs(const uint8_t* p, bool nibbles) { return pair_words(p, nibbles, true); }
  static void sc_mn_load_pairs(const uint8_t* p, bool nibbles, size_t mn_offset, Sc& s0, Sc& s1, Pr& pr) {
    if (!nibbles) {
      sc_load_pairs(p, false, s0, s1);
      pr = mn_load_pairs(p + mn_offset, false);
      return;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    split_pairs(_mm512_cvtepu8_epi16(_mm256_and_si256(b, m4)), s0, s1);
    pr = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4));
  }
  static void fold(I& acc, Sub s, Sc sc) { acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(s, sc)); }
  static void fold_z(I& acc, Sub s, Z z, Sc sc) {
    acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_sub_epi32(s, z), sc));
  }
  static void fold_pairs(I& acc, const int16_t* cs, Pr p) {
    int32_t v;
    std::memcpy(&v, cs, 4);
    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, _mm512_set1_epi32(v)));
  }
  static I sc_i(Sc s) { return s; }
  static void pr_split(Pr p, I& a, I& b) { split_pairs(p, a, b); }
  static F load_half(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static I add(I a, I b) { return _mm512_add_epi32(a, b); }
};

#include <lowbit/gemm/kernel_body.hpp>
#include <lowbit/gemm/block_kernel_body.hpp>

}  // namespace lowbit::kernels::avx512_vnni

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // LOWBIT_X86
