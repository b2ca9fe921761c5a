// test_half.cpp: binary16 and bfloat16 conversion against hand-made values, ldexp, brute force and F16C.
#include <lowbit/core/half.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LOWBIT_TEST_F16C 1
#endif

namespace {

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

float from_bits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

// The value of half `h` from its definition, in double (exact): (-1)^s * 2^(e-15) * (1 + m/1024),
// or 2^-14 * m/1024 for e = 0.
double half_value(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double mag = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(1024.0 + m, e - 25);
  return s ? -mag : mag;
}

// The nearest half to x found by searching every finite half, ties to the even bit pattern;
// |x| at or beyond the midpoint between 65504 and 65536 (= 65520) is inf, by the IEEE rule.
uint16_t brute_force_half(float x) {
  static const std::vector<double> positive = [] {
    std::vector<double> v;
    for (uint32_t h = 0; h < 0x7C00u; ++h) v.push_back(half_value(uint16_t(h)));
    return v;
  }();
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(double(x));
  if (a >= 65520.0) return uint16_t(sign | 0x7C00);
  const auto it = std::lower_bound(positive.begin(), positive.end(), a);
  size_t hi = size_t(it - positive.begin());
  if (hi == positive.size()) hi = positive.size() - 1;
  size_t best = hi;
  if (hi > 0) {
    const double dl = a - positive[hi - 1], dh = positive[hi] - a;
    if (dl < dh || (dl == dh && ((hi - 1) % 2 == 0))) best = hi - 1;
  }
  return uint16_t(sign | best);
}

#ifdef LOWBIT_TEST_F16C
__attribute__((target("f16c"))) uint16_t f16c_from_float(float x) {
  return uint16_t(_mm_cvtsi128_si32(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT)) & 0xFFFF);
}
__attribute__((target("f16c"))) float f16c_to_float(uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
__attribute__((target("xsave"))) unsigned long long xcr0() { return __builtin_ia32_xgetbv(0); }
// F16C is VEX-encoded: it needs the CPUID bit and the OS saving the AVX state.
bool have_f16c() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  if (!(c & (1u << 29)) || !(c & (1u << 27))) return false;
  return (xcr0() & 0x6) == 0x6;
}
#endif

}  // namespace

TEST_CASE("half_to_float: every one of the 65536 halves against its definition") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = lowbit::half_to_float(uint16_t(h));
    const int e = (h >> 10) & 31, m = h & 1023;
    INFO("half 0x" << std::hex << h);
    if (e == 31 && m != 0) {
      // NaN: sign and payload kept, quiet bit set.
      REQUIRE(std::isnan(f));
      REQUIRE(bits(f) == (((h & 0x8000u) << 16) | 0x7FC00000u | (uint32_t(m) << 13)));
    } else if (e == 31) {
      REQUIRE(std::isinf(f));
      REQUIRE(std::signbit(f) == bool(h & 0x8000u));
    } else {
      REQUIRE(double(f) == half_value(uint16_t(h)));
      REQUIRE(std::signbit(f) == bool(h & 0x8000u));  // -0 stays -0
    }
  }
}

TEST_CASE("every half round-trips through float (NaNs come back quiet)") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t back = lowbit::float_to_half(lowbit::half_to_float(uint16_t(h)));
    INFO("half 0x" << std::hex << h);
    if ((h & 0x7C00u) == 0x7C00u && (h & 0x3FFu))
      REQUIRE(back == (h | 0x0200u));
    else
      REQUIRE(back == h);
  }
}

TEST_CASE("float_to_half on the boundaries, worked out by hand") {
  using lowbit::float_to_half;
  CHECK(float_to_half(0.0f) == 0x0000);
  CHECK(float_to_half(-0.0f) == 0x8000);
  CHECK(float_to_half(1.0f) == 0x3C00);
  CHECK(float_to_half(-2.0f) == 0xC000);
  // 65504 = (2 - 2^-10) * 2^15 is the largest normal; 65520 is the midpoint to 2^16 (which would
  // be the next value): ties go to the even pattern, 0x7C00 = inf.
  CHECK(float_to_half(65504.0f) == 0x7BFF);
  CHECK(float_to_half(std::nextafter(65520.0f, 0.0f)) == 0x7BFF);
  CHECK(float_to_half(65520.0f) == 0x7C00);
  CHECK(float_to_half(-65520.0f) == 0xFC00);
  CHECK(float_to_half(1e10f) == 0x7C00);
  CHECK(float_to_half(INFINITY) == 0x7C00);
  CHECK(float_to_half(-INFINITY) == 0xFC00);
  // Half ulp at 1.0 is 2^-11: 1 + 2^-11 ties between 0x3C00 (even) and 0x3C01 -> 0x3C00;
  // 1 + 3*2^-11 ties between 0x3C01 and 0x3C02 (even) -> 0x3C02; just above a tie rounds up.
  CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);
  CHECK(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);
  CHECK(float_to_half(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)) == 0x3C01);
  // A carry out of the mantissa: (2 - 2^-11) ties between 0x3FFF (odd) and 2.0 = 0x4000.
  CHECK(float_to_half(2.0f - std::ldexp(1.0f, -11)) == 0x4000);
  // Smallest normal 2^-14 = 0x0400; largest subnormal 1023 * 2^-24 = 0x03FF; their midpoint
  // 2^-14 - 2^-25 ties to the even 0x0400.
  CHECK(float_to_half(std::ldexp(1.0f, -14)) == 0x0400);
  CHECK(float_to_half(1023 * std::ldexp(1.0f, -24)) == 0x03FF);
  CHECK(float_to_half(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)) == 0x0400);
  // Smallest subnormal 2^-24 = 0x0001; 2^-25 ties between 0 and 0x0001 -> 0; anything above goes
  // to 0x0001; 3 * 2^-25 ties between 0x0001 and 0x0002 -> 0x0002; 5 * 2^-25 -> 0x0002.
  CHECK(float_to_half(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(float_to_half(std::ldexp(1.0f, -25)) == 0x0000);
  CHECK(float_to_half(-std::ldexp(1.0f, -25)) == 0x8000);
  CHECK(float_to_half(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
  CHECK(float_to_half(3 * std::ldexp(1.0f, -25)) == 0x0002);
  CHECK(float_to_half(5 * std::ldexp(1.0f, -25)) == 0x0002);
  CHECK(float_to_half(std::ldexp(1.0f, -30)) == 0x0000);
  CHECK(float_to_half(from_bits(0x00000001u)) == 0x0000);  // float subnormals
  // NaN: quiet, sign kept, top payload bits kept.
  CHECK(float_to_half(from_bits(0x7FC00000u)) == 0x7E00);
  CHECK(float_to_half(from_bits(0x7F800001u)) == 0x7E00);   // signalling -> quiet
  CHECK(float_to_half(from_bits(0xFF812345u)) == 0xFE09);   // payload 0x012345 >> 13 = 9
}

TEST_CASE("float_to_half equals the brute-force nearest half on random and structured floats") {
  std::mt19937 rng(12);
  std::vector<float> xs;
  // Every float whose low 13 bits (the ones a normal half drops) are a rounding case.
  for (uint32_t hi = 0; hi < (1u << 19); hi += 7)
    for (uint32_t lo : {0u, 1u, 0xFFFu, 0x1000u, 0x1001u, 0x1FFFu}) xs.push_back(from_bits((hi << 13) | lo));
  // Random floats in the subnormal-half range and around it (exponents 100..114).
  std::uniform_int_distribution<uint32_t> mant(0, 0x7FFFFF), exps(100, 114);
  for (int i = 0; i < 200000; ++i) xs.push_back(from_bits((exps(rng) << 23) | mant(rng)));
  // Exact ties in the subnormal range: (2k+1) * 2^-25 ... at each shift.
  for (int shift = 25; shift <= 36; ++shift)
    for (int k = 0; k < 64; ++k) xs.push_back(std::ldexp(float(2 * k + 1), -shift));
  for (float x : xs) {
    if (std::isnan(x)) continue;
    for (float v : {x, -x}) {
      INFO("x = " << v << " bits 0x" << std::hex << bits(v));
      REQUIRE(lowbit::float_to_half(v) == brute_force_half(v));
    }
  }
}

#ifdef LOWBIT_TEST_F16C
TEST_CASE("half conversions equal F16C's vcvtps2ph / vcvtph2ps bit for bit") {
  if (!have_f16c()) {
    WARN("this CPU has no F16C: second oracle skipped");
    return;
  }
  for (uint32_t h = 0; h < 65536; ++h)
    REQUIRE(bits(lowbit::half_to_float(uint16_t(h))) == bits(f16c_to_float(uint16_t(h))));
  // Every 97th float (44 million, every exponent and NaN class) and all neighbours of ties.
  for (uint64_t b = 0; b < (1ull << 32); b += 97) {
    const float x = from_bits(uint32_t(b));
    if (lowbit::float_to_half(x) != f16c_from_float(x)) {
      INFO("float bits 0x" << std::hex << b);
      REQUIRE(lowbit::float_to_half(x) == f16c_from_float(x));
    }
  }
  for (uint32_t hi = 0; hi < (1u << 19); ++hi)
    for (uint32_t lo : {0x0FFFu, 0x1000u, 0x1001u}) {
      const float x = from_bits((hi << 13) | lo);
      const float y = from_bits(0x80000000u | (hi << 13) | lo);
      REQUIRE(lowbit::float_to_half(x) == f16c_from_float(x));
      REQUIRE(lowbit::float_to_half(y) == f16c_from_float(y));
    }
}
#endif

TEST_CASE("bfloat16 conversions: hand-made values, ties to even, NaN made quiet") {
  using lowbit::bf16_to_float;
  using lowbit::float_to_bf16;
  CHECK(float_to_bf16(1.0f) == 0x3F80);
  CHECK(float_to_bf16(-0.0f) == 0x8000);
  CHECK(float_to_bf16(INFINITY) == 0x7F80);
  CHECK(float_to_bf16(-INFINITY) == 0xFF80);
  // bf16 keeps 7 mantissa bits: half ulp at 1 is 2^-8. 1 + 2^-8 ties -> 0x3F80 (even);
  // 1 + 3 * 2^-8 ties between 0x3F81 and 0x3F82 (even) -> 0x3F82.
  CHECK(float_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);
  CHECK(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);
  CHECK(float_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)) == 0x3F81);
  // Largest finite bf16 is 0x7F7F; FLT_MAX = 0x7F7FFFFF lies above the midpoint to 2^128 -> inf;
  // 0x7F7F7FFF lies below it; 0x7F7F8000 is the tie, 0x7F7F odd -> inf.
  CHECK(float_to_bf16(from_bits(0x7F7FFFFFu)) == 0x7F80);
  CHECK(float_to_bf16(from_bits(0x7F7F7FFFu)) == 0x7F7F);
  CHECK(float_to_bf16(from_bits(0x7F7F8000u)) == 0x7F80);
  // Subnormals round like any other value: 0x00008000 ties to 0; 0x00018000 ties to 0x0002.
  CHECK(float_to_bf16(from_bits(0x00008000u)) == 0x0000);
  CHECK(float_to_bf16(from_bits(0x00018000u)) == 0x0002);
  CHECK(float_to_bf16(from_bits(0x00008001u)) == 0x0001);
  // NaN: the upper bits are kept and bit 6 (the quiet bit) set.
  CHECK(float_to_bf16(from_bits(0x7F800001u)) == 0x7FC0);
  CHECK(float_to_bf16(from_bits(0xFFA00000u)) == 0xFFE0);
  CHECK(float_to_bf16(from_bits(0x7FC12345u)) == 0x7FC1);
  CHECK(bits(bf16_to_float(0x3F80)) == 0x3F800000u);
  CHECK(bits(bf16_to_float(0x8001)) == 0x80010000u);
  CHECK(bits(bf16_to_float(0x7F81)) == 0x7F810000u);
  // Every bf16 round-trips (NaNs become quiet).
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t back = float_to_bf16(bf16_to_float(uint16_t(h)));
    const bool nan = (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu);
    REQUIRE(back == (nan ? (h | 0x40u) : h));
  }
}

TEST_CASE("float_to_bf16 equals the nearest bfloat16 computed in double") {
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 2000000; ++i) {
    uint32_t b = any(rng);
    if (i % 4 == 1) b = (b & 0xFFFF0000u) | 0x8000u;  // exact ties
    if (i % 4 == 2) b = (b & 0xFFFF0000u) | 0x7FFFu;
    const float x = from_bits(b);
    if (std::isnan(x)) continue;
    // Candidates: the truncation t and the next bf16 away from zero; pick the nearer, ties even.
    const uint16_t t = uint16_t(b >> 16);
    const double lo = double(from_bits(uint32_t(t) << 16));
    const uint16_t up = uint16_t(t + 1);
    // Past the largest finite value the next pattern is inf; IEEE rounds as if it were 2^128.
    const double hi = (up & 0x7FFFu) == 0x7F80u ? std::copysign(std::ldexp(1.0, 128), lo)
                                                : double(from_bits(uint32_t(up) << 16));
    const double dl = std::fabs(double(x) - lo), dh = std::fabs(hi - double(x));
    const uint16_t want = (dl < dh || (dl == dh && !(t & 1u))) ? t : up;
    INFO("bits 0x" << std::hex << b);
    REQUIRE(lowbit::float_to_bf16(x) == want);
  }
}

TEST_CASE("is_finite_half and is_normal_half classify every half") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = lowbit::half_to_float(uint16_t(h));
    REQUIRE(lowbit::is_finite_half(uint16_t(h)) == std::isfinite(f));
    REQUIRE(lowbit::is_normal_half(uint16_t(h)) ==
            (std::isfinite(f) && std::fabs(f) >= std::ldexp(1.0f, -14)));  // half subnormals are float normals
  }
}
