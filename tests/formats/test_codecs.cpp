// test_codecs.cpp: every codec's invariants on random and extreme blocks, its grid (fit) against
// brute force, the reference rounding's error bounds and the encode/decode identities.
#include <lowbit/formats/format.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

using namespace lowbit::formats;
using lowbit::float_to_half;
using lowbit::half_to_float;

namespace {

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

template <class F>
constexpr int nsub() {
  return F::block_size / F::sub_block;
}
template <class F>
constexpr bool has_scales() {
  return F::scale_hi != 0;
}
template <class F>
constexpr bool has_mins() {
  return F::min_hi != 0;
}
template <class F>
constexpr bool has_m() {  // an fp16 min/dmin field
  return F::has_offset;
}

// The codes a format can store, ascending (qmin..qmax, or the levels of a non-uniform grid).
template <class F>
std::vector<int> code_list() {
  const detail::CodeSet set = detail::code_set<F>();
  std::vector<int> v;
  for (int k = 0; k < set.size(); ++k) v.push_back(set.at(k));
  return v;
}
template <class F>
int random_code(std::mt19937& rng) {
  const detail::CodeSet set = detail::code_set<F>();
  return set.at(int(rng() % uint32_t(set.size())));
}
template <class F>
int zero_code() {  // the code nearest 0
  return detail::nearest_code(0.0f, SubBlockParams{1.0f, 0.0f}, detail::code_set<F>(), false);
}
// The largest gap between neighbouring codes (1 for the uniform formats).
template <class F>
int max_gap() {
  const std::vector<int> c = code_list<F>();
  int g = 0;
  for (size_t k = 1; k < c.size(); ++k) g = std::max(g, c[k] - c[k - 1]);
  return g;
}

uint16_t finite_half(std::mt19937& rng) {
  uint16_t h;
  do h = uint16_t(rng()); while ((h & 0x7C00u) == 0x7C00u);
  return h;
}

// Random in-range parameters and codes; `d_choice` picks the fp16 scales from special values.
template <class F>
void random_params(std::mt19937& rng, BlockParams& p, int8_t* codes) {
  p = BlockParams{};
  p.d = finite_half(rng);
  if (has_m<F>()) p.m = finite_half(rng);
  for (int j = 0; j < nsub<F>(); ++j) {
    if (has_scales<F>())
      p.scales[size_t(j)] = int16_t(F::scale_lo + int(rng() % uint32_t(F::scale_hi - F::scale_lo + 1)));
    if (has_mins<F>()) p.mins[size_t(j)] = int16_t(rng() % uint32_t(F::min_hi + 1));
  }
  for (int i = 0; i < F::block_size; ++i) codes[i] = int8_t(random_code<F>(rng));
}

// decode(block)[i] == decode_value(sub_block_params(p, i / sub_block), codes[i]) bit for bit, and
// pack(unpack(block)) == block.
template <class F>
void check_invariant(const uint8_t* block) {
  float out[256];
  F::decode(block, out);
  BlockParams p;
  int8_t codes[256];
  F::unpack(block, p, codes);
  for (int i = 0; i < F::block_size; ++i) {
    const std::vector<int> valid = code_list<F>();
    REQUIRE(std::find(valid.begin(), valid.end(), int(codes[i])) != valid.end());
    const float v = decode_value(F::sub_block_params(p, i / F::sub_block), codes[i], F::has_offset);
    INFO("weight " << i << " decode " << out[i] << " decode_value " << v);
    REQUIRE(bits(out[i]) == bits(v));
  }
  uint8_t back[256];
  std::memset(back, 0xA5, sizeof back);
  F::pack(p, codes, back);
  REQUIRE(std::memcmp(back, block, size_t(F::type_size)) == 0);
}

// The value decode gives, recomputed in double from the documented formula, each float operation
// rounded as the format specifies (an oracle independent of the codec's code).
template <class F>
float formula(const BlockParams& p, int j, int q) {
  const double d = double(half_to_float(p.d)), m = double(half_to_float(p.m));
  if (!has_scales<F>()) {
    const float prod = float(double(q) * d);
    return F::has_offset ? float(double(prod) + m) : prod;
  }
  const float dl = float(d * double(p.scales[size_t(j)]));
  const float prod = float(double(dl) * double(q));
  if (!F::has_offset) return prod;
  const float ml = float(m * double(p.mins[size_t(j)]));
  return float(double(prod) - double(ml));
}

}  // namespace

#define LOWBIT_ALL_FORMATS Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS

TEMPLATE_TEST_CASE("geometry agrees with type.hpp and the Format table", "[formats]",
                   LOWBIT_ALL_FORMATS) {
  using F = TestType;
  const TypeInfo& t = info(F::type);
  CHECK(t.block_size == uint32_t(F::block_size));
  CHECK(t.type_size == uint32_t(F::type_size));
  const Format& f = format(F::type);
  CHECK(f.name == t.name);
  CHECK(f.block_size == F::block_size);
  CHECK(f.type_size == F::type_size);
  CHECK(f.sub_block == F::sub_block);
  CHECK(f.qmin == F::qmin);
  CHECK(f.qmax == F::qmax);
  CHECK(f.has_offset == F::has_offset);
  CHECK(f.sub_blocks() == nsub<F>());
  CHECK(find_format(F::type) == &f);
}

TEMPLATE_TEST_CASE("invariant: decode == decode_value(unpack), pack(unpack(b)) == b on random blocks",
                   "[formats]", LOWBIT_ALL_FORMATS) {
  using F = TestType;
  std::mt19937 rng(7);
  std::vector<uint8_t> block(F::type_size);
  for (int it = 0; it < 3000; ++it) {
    // Random bytes with the fp16 fields made finite: every other field is in range by layout.
    for (auto& b : block) b = uint8_t(rng());
    BlockParams p;
    int8_t codes[256];
    F::unpack(block.data(), p, codes);
    p.d = finite_half(rng);
    if (has_m<F>()) p.m = finite_half(rng);
    F::pack(p, codes, block.data());
    check_invariant<F>(block.data());
  }
}

TEMPLATE_TEST_CASE("invariant on extreme blocks: zero, ±65504, outliers, subnormal and negative d",
                   "[formats]", LOWBIT_ALL_FORMATS) {
  using F = TestType;
  std::mt19937 rng(8);
  const uint16_t ds[] = {0x0000, 0x8000, 0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x03FF, 0x83FF,
                         0x0400, 0x3C00, 0xBC00, 0x7800};
  std::vector<uint8_t> block(F::type_size, 0);
  check_invariant<F>(block.data());  // all-zero bytes
  for (uint16_t d : ds)
    for (uint16_t m : ds)
      for (int pattern = 0; pattern < 5; ++pattern) {
        BlockParams p;
        p.d = d;
        if (has_m<F>()) p.m = m;
        for (int j = 0; j < nsub<F>(); ++j) {
          if (has_scales<F>())
            p.scales[size_t(j)] = int16_t(pattern % 2 ? F::scale_hi : F::scale_lo);
          if (has_mins<F>()) p.mins[size_t(j)] = int16_t(pattern < 2 ? F::min_hi : 0);
        }
        int8_t codes[256];
        for (int i = 0; i < F::block_size; ++i) {
          switch (pattern) {
            case 0: codes[i] = int8_t(F::qmax); break;
            case 1: codes[i] = int8_t(F::qmin); break;
            case 2: codes[i] = int8_t(i == 77 % F::block_size ? F::qmax : zero_code<F>()); break;  // one outlier
            case 3: codes[i] = int8_t(i == 5 ? F::qmin : F::qmax); break;
            default: codes[i] = int8_t(random_code<F>(rng));
          }
        }
        F::pack(p, codes, block.data());
        INFO("d 0x" << std::hex << d << " m 0x" << m << " pattern " << pattern);
        check_invariant<F>(block.data());
        BlockParams back;
        int8_t back_codes[256];
        F::unpack(block.data(), back, back_codes);
        REQUIRE(back == p);
        REQUIRE(std::equal(codes, codes + F::block_size, back_codes));
      }
}

TEMPLATE_TEST_CASE("every code in every sub-block decodes to the documented formula", "[formats]",
                   LOWBIT_ALL_FORMATS) {
  using F = TestType;
  std::mt19937 rng(9);
  const uint16_t ds[] = {0x3C00, 0xB800, 0x0001, 0x03FF, 0x7BFF, 0xFBFF, 0x1A3B, 0x0000};
  std::vector<uint8_t> block(F::type_size);
  for (uint16_t d : ds)
    for (int rep = 0; rep < 4; ++rep)
      for (int q : code_list<F>()) {
        BlockParams p;
        int8_t codes[256];
        random_params<F>(rng, p, codes);
        p.d = d;
        if (rep == 0 && has_scales<F>())
          for (int j = 0; j < nsub<F>(); ++j) p.scales[size_t(j)] = int16_t(j % 2 ? F::scale_hi : F::scale_lo);
        for (int i = 0; i < F::block_size; ++i) codes[i] = int8_t(q);
        F::pack(p, codes, block.data());
        float out[256];
        F::decode(block.data(), out);
        for (int i = 0; i < F::block_size; ++i) {
          INFO("d 0x" << std::hex << d << std::dec << " q " << q << " weight " << i);
          REQUIRE(bits(out[i]) == bits(formula<F>(p, i / F::sub_block, q)));
        }
      }
}

TEMPLATE_TEST_CASE("pack then unpack returns random in-range parameters and codes", "[formats]",
                   LOWBIT_ALL_FORMATS) {
  using F = TestType;
  std::mt19937 rng(10);
  std::vector<uint8_t> block(F::type_size);
  for (int it = 0; it < 2000; ++it) {
    BlockParams p, back;
    int8_t codes[256], back_codes[256];
    random_params<F>(rng, p, codes);
    F::pack(p, codes, block.data());
    F::unpack(block.data(), back, back_codes);
    REQUIRE(back == p);
    REQUIRE(std::equal(codes, codes + F::block_size, back_codes));
  }
}

TEMPLATE_TEST_CASE("fit: in range, d the nearest fp16, sub-block values the nearest by brute force",
                   "[formats]", LOWBIT_ALL_FORMATS) {
  using F = TestType;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // All finite halves by value: the brute-force nearest fp16.
  auto nearest_half_dist = [](float x) {
    double best = std::numeric_limits<double>::infinity();
    for (uint32_t h = 0; h < 65536; ++h) {
      if ((h & 0x7C00u) == 0x7C00u) continue;
      best = std::min(best, std::fabs(double(half_to_float(uint16_t(h))) - double(x)));
    }
    return best;
  };
  for (int it = 0; it < 60; ++it) {
    const float mag = std::ldexp(1.0f, int(rng() % 40) - 24);  // 2^-24 .. 2^15
    SubBlockParams w[16];
    for (int j = 0; j < nsub<F>(); ++j) {
      w[j].scale = u(rng) * mag;
      w[j].offset = u(rng) * mag * 4;
      if (F::has_offset && it % 3 != 0) w[j].scale = std::fabs(w[j].scale);
      if (it % 7 == 0 && j == 1) w[j].scale = 0;
    }
    if (it == 5) w[0].scale = 1e9f;  // saturates at 65504
    if (it == 6) w[0].offset = -1e9f;
    const BlockParams p = F::fit(w);
    REQUIRE(lowbit::is_finite_half(p.d));
    REQUIRE(lowbit::is_finite_half(p.m));
    if (!has_m<F>()) REQUIRE(p.m == 0);
    for (int j = 0; j < 16; ++j) {
      const bool used = j < nsub<F>();
      if (!has_scales<F>() || !used) REQUIRE(p.scales[size_t(j)] == 0);
      if (!has_mins<F>() || !used) REQUIRE(p.mins[size_t(j)] == 0);
      if (used) {
        REQUIRE(p.scales[size_t(j)] >= F::scale_lo);
        REQUIRE(p.scales[size_t(j)] <= F::scale_hi);
        REQUIRE(p.mins[size_t(j)] >= 0);
        REQUIRE(p.mins[size_t(j)] <= F::min_hi);
      }
    }
    INFO("iteration " << it);
    if (!has_scales<F>()) {
      // Legacy: d (and m) the nearest finite fp16 of the wanted scale (offset).
      const float d = half_to_float(p.d);
      if (std::fabs(w[0].scale) <= 65504.0f) {
        REQUIRE(std::fabs(double(d) - double(w[0].scale)) == nearest_half_dist(w[0].scale));
      } else {
        REQUIRE(std::fabs(d) == 65504.0f);
      }
      if (F::has_offset && std::fabs(w[0].offset) <= 65504.0f)
        REQUIRE(std::fabs(double(half_to_float(p.m)) - double(w[0].offset)) == nearest_half_dist(w[0].offset));
      continue;
    }
    // K-quants: the super-block values follow the documented rule...
    float big = 0, smax = 0, mmax = 0;
    for (int j = 0; j < nsub<F>(); ++j) {
      if (std::fabs(w[j].scale) > std::fabs(big)) big = w[j].scale;
      smax = std::max(smax, w[j].scale);
      mmax = std::max(mmax, -w[j].offset);
    }
    const float d_want = F::has_offset ? smax / float(F::scale_hi) : big / float(F::scale_lo);
    if (std::fabs(d_want) <= 65504.0f)
      REQUIRE(std::fabs(double(half_to_float(p.d)) - double(d_want)) == nearest_half_dist(d_want));
    if (F::has_offset) {
      const float m_want = mmax / float(F::min_hi);
      REQUIRE(std::fabs(double(half_to_float(p.m)) - double(m_want)) == nearest_half_dist(m_want));
    }
    // ... and each sub-block's integers are the nearest on their grid (brute force over all).
    const float d = half_to_float(p.d), dmin = half_to_float(p.m);
    for (int j = 0; j < nsub<F>(); ++j) {
      double best = std::numeric_limits<double>::infinity();
      for (int k = F::scale_lo; k <= F::scale_hi; ++k)
        best = std::min(best, std::fabs(double(d * float(k)) - double(w[j].scale)));
      REQUIRE(std::fabs(double(F::sub_block_params(p, j).scale) - double(w[j].scale)) == best);
      if (has_mins<F>()) {
        double bm = std::numeric_limits<double>::infinity();
        for (int k = 0; k <= F::min_hi; ++k)
          bm = std::min(bm, std::fabs(double(-(dmin * float(k))) - double(w[j].offset)));
        REQUIRE(std::fabs(double(F::sub_block_params(p, j).offset) - double(w[j].offset)) == bm);
      }
    }
  }
}

TEMPLATE_TEST_CASE("encode_block of decode(params) gives the codes back", "[formats]",
                   LOWBIT_ALL_FORMATS) {
  using F = TestType;
  const Format& f = format(F::type);
  std::mt19937 rng(12);
  std::vector<uint8_t> block(F::type_size), again(F::type_size);
  int compared = 0;
  for (int it = 0; it < 1500; ++it) {
    BlockParams p;
    int8_t codes[256];
    random_params<F>(rng, p, codes);
    // Normal fp16 scales in a moderate range, so that codes decode to distinct values.
    p.d = float_to_half(std::ldexp(1.0f + float(rng() % 1000) / 1000.0f, int(rng() % 16) - 8) *
                        ((rng() & 1) ? 1.0f : -1.0f));
    if (has_m<F>()) p.m = float_to_half(float(int(rng() % 2001) - 1000) / 64.0f);
    F::pack(p, codes, block.data());
    float x[256];
    F::decode(block.data(), x);
    encode_block(f, x, p, again.data());
    BlockParams p2;
    int8_t codes2[256];
    F::unpack(again.data(), p2, codes2);
    REQUIRE(p2 == p);
    float y[256];
    F::decode(again.data(), y);
    // The values always come back (a zero scale may flip the sign of a zero: +0 == -0).
    for (int i = 0; i < F::block_size; ++i) REQUIRE(y[i] == x[i]);
    for (int j = 0; j < nsub<F>(); ++j) {
      // Codes come back wherever the sub-block's values are distinct (scale 0 collapses them).
      const SubBlockParams s = F::sub_block_params(p, j);
      std::vector<float> vals;
      for (int q : code_list<F>()) vals.push_back(decode_value(s, q, F::has_offset));
      std::sort(vals.begin(), vals.end());
      if (std::adjacent_find(vals.begin(), vals.end()) != vals.end()) continue;
      for (int i = j * F::sub_block; i < (j + 1) * F::sub_block; ++i) REQUIRE(codes2[i] == codes[i]);
      ++compared;
    }
  }
  CHECK(compared > 1000);
}

TEMPLATE_TEST_CASE("encode_block picks the nearest code (brute force, ties to the even code)",
                   "[formats]", LOWBIT_ALL_FORMATS) {
  using F = TestType;
  const Format& f = format(F::type);
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint8_t> block(F::type_size);
  for (int it = 0; it < 400; ++it) {
    BlockParams p;
    int8_t codes[256];
    random_params<F>(rng, p, codes);
    if (it % 4 == 0) p.d = uint16_t(rng() % 0x400);  // subnormal scales
    float x[256];
    const SubBlockParams s0 = F::sub_block_params(p, 0);
    const float span = std::fabs(s0.scale) * float(F::qmax - F::qmin) + std::fabs(s0.offset) + 1e-3f;
    for (int i = 0; i < F::block_size; ++i) x[i] = u(rng) * span;
    if (it % 5 == 1)  // exact midpoints between neighbouring codes: ties
      for (int i = 0; i < F::block_size; ++i) {
        const SubBlockParams s = F::sub_block_params(p, i / F::sub_block);
        const std::vector<int> c = code_list<F>();
        const size_t k = rng() % (c.size() - 1);
        x[i] = float((double(decode_value(s, c[k], F::has_offset)) + double(decode_value(s, c[k + 1], F::has_offset))) / 2);
      }
    encode_block(f, x, p, block.data());
    BlockParams back;
    int8_t got[256];
    F::unpack(block.data(), back, got);
    for (int i = 0; i < F::block_size; ++i) {
      const SubBlockParams s = F::sub_block_params(p, i / F::sub_block);
      double best = std::numeric_limits<double>::infinity();
      for (int q : code_list<F>())
        best = std::min(best, std::fabs(double(x[i]) - double(decode_value(s, q, F::has_offset))));
      const double mine = std::fabs(double(x[i]) - double(decode_value(s, got[i], F::has_offset)));
      INFO("weight " << i << " x " << x[i] << " code " << int(got[i]));
      REQUIRE(mine == best);
      // A tie between two neighbouring codes of different value goes to the even index.
      const std::vector<int> c = code_list<F>();
      const long gi = std::find(c.begin(), c.end(), int(got[i])) - c.begin();
      for (long k : {gi - 1, gi + 1}) {
        if (k < 0 || k >= long(c.size())) continue;
        const float v = decode_value(s, c[size_t(k)], F::has_offset);
        if (std::fabs(double(x[i]) - double(v)) == best && v != decode_value(s, got[i], F::has_offset))
          REQUIRE(gi % 2 == 0);
      }
    }
  }
}

namespace {

// Rows that exercise the reference rounding: gaussian-like, with outliers, tiny, huge, constant.
std::vector<float> test_rows(std::mt19937& rng, int n, int kind) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = g(rng);
  switch (kind) {
    case 1: for (auto& v : x) v *= 1e-5f; break;                    // tiny: subnormal fp16 scales
    case 2: for (auto& v : x) v = v * 100.0f + 300.0f; break;        // all positive, offset
    case 3: for (auto& v : x) v = -std::fabs(v) * 40.0f; break;      // all negative
    case 4: x[size_t(n / 3)] = 60.0f; break;                          // one outlier
    case 5: for (auto& v : x) v = 1.25f; break;                       // constant
    case 6: for (auto& v : x) v = 0.0f; break;                        // zero
    case 7: for (auto& v : x) v *= 2000.0f; break;                    // large (fp16 scales ~ 1e3)
    default: break;
  }
  return x;
}

// What the reference rounding wants for one sub-block (its documented rule, re-derived here).
template <class F>
SubBlockParams wanted_by_rule(const float* x) {
  SubBlockParams s;
  if constexpr (F::has_offset) {
    float lo = *std::min_element(x, x + F::sub_block), hi = *std::max_element(x, x + F::sub_block);
    if (F::nonpositive_offset) lo = std::min(lo, 0.0f);
    s.scale = (hi - lo) / float(F::qmax);
    s.offset = lo;
  } else {
    float m = 0;
    for (int i = 0; i < F::sub_block; ++i)
      if (std::fabs(x[i]) > std::fabs(m)) m = x[i];
    s.scale = F::type == Type::Q8_0 ? std::fabs(m) / 127.0f : m / float(F::qmin);
  }
  return s;
}

template <class F>
double weighted_error(const std::vector<float>& x, const std::vector<float>& w, const std::vector<uint8_t>& q) {
  std::vector<float> y(x.size());
  decode_row(F::type, q.data(), lowbit::Index(x.size()), y.data());
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) e += double(w[i]) * (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  return e;
}

}  // namespace

TEMPLATE_TEST_CASE("quantize: decode error within half a step plus the grid's own slack", "[formats]",
                   LOWBIT_ALL_FORMATS) {
  using F = TestType;
  std::mt19937 rng(14);
  const int n = 4 * 256;
  std::vector<uint8_t> q(size_t(row_bytes(F::type, n)));
  for (int kind = 0; kind < 8; ++kind)
    for (int rep = 0; rep < 3; ++rep) {
      const std::vector<float> x = test_rows(rng, n, kind);
      quantize_row(F::type, x.data(), n, q.data());
      std::vector<float> y(static_cast<size_t>(n));
      decode_row(F::type, q.data(), n, y.data());
      for (int b = 0; b < n / F::block_size; ++b) {
        BlockParams p;
        int8_t codes[256];
        F::unpack(q.data() + size_t(b) * F::type_size, p, codes);
        for (int j = 0; j < nsub<F>(); ++j) {
          const int base = b * F::block_size + j * F::sub_block;
          const SubBlockParams want = wanted_by_rule<F>(x.data() + base);
          const SubBlockParams got = F::sub_block_params(p, j);
          // The wanted grid covers [v(qmin), v(qmax)]; a value outside it (the far side of a
          // signed format) is that much further. Fitting moves the grid by at most
          // max|q| * |scale error| + |offset error|; float rounding adds a few ulps.
          const double qabs = std::max(std::abs(F::qmin), std::abs(F::qmax));
          const double gap = max_gap<F>();  // the largest step between codes, in units of the scale
          const double lo_w = std::min(decode_value(want, F::qmin, F::has_offset), decode_value(want, F::qmax, F::has_offset));
          const double hi_w = std::max(decode_value(want, F::qmin, F::has_offset), decode_value(want, F::qmax, F::has_offset));
          const double slack = qabs * std::fabs(double(got.scale) - double(want.scale)) +
                               std::fabs(double(got.offset) - double(want.offset));
          const double lo_g = std::min(decode_value(got, F::qmin, F::has_offset), decode_value(got, F::qmax, F::has_offset));
          const double hi_g = std::max(decode_value(got, F::qmin, F::has_offset), decode_value(got, F::qmax, F::has_offset));
          for (int i = base; i < base + F::sub_block; ++i) {
            const double xi = x[size_t(i)], err = std::fabs(xi - double(y[size_t(i)]));
            const double tiny = 1e-6 * (std::fabs(xi) + std::fabs(double(want.offset)) + std::fabs(double(want.scale)) * qabs) + 1e-30;
            const double outside = std::max({0.0, lo_w - xi, xi - hi_w});
            INFO("kind " << kind << " weight " << i << " x " << xi << " decoded " << y[size_t(i)]
                         << " wanted scale " << want.scale << " got " << got.scale << " offset " << want.offset << " got " << got.offset);
            REQUIRE(err <= gap * std::fabs(double(want.scale)) / 2 + outside + slack + tiny);
            // Inside the grid actually stored: never more than half its step.
            if (xi >= lo_g && xi <= hi_g) REQUIRE(err <= gap * std::fabs(double(got.scale)) / 2 * (1 + 1e-6) + tiny);
          }
          // The slack itself is what the grid promises: legacy fp16 rounding (2^-11 relative, or
          // half the subnormal spacing); K-quants the nearest integer multiple of d (dmin), so at
          // most half a unit beyond what clamping to the integer range costs.
          if (!has_scales<F>()) {
            REQUIRE(std::fabs(double(got.scale) - double(want.scale)) <= std::fabs(double(want.scale)) * 0x1p-11 + 0x1p-25);
          } else {
            auto grid_bound = [](double want_v, double unit, int lo, int hi) {
              if (unit == 0) return std::fabs(want_v);
              const double t = want_v / unit;
              return std::fabs(unit) * (0.5 + std::max({0.0, double(lo) - t, t - double(hi)})) * (1 + 1e-9);
            };
            const double dd = double(half_to_float(p.d));
            REQUIRE(std::fabs(double(got.scale) - double(want.scale)) <=
                    grid_bound(want.scale, dd, F::scale_lo, F::scale_hi));
            if (has_mins<F>())
              REQUIRE(std::fabs(double(got.offset) - double(want.offset)) <=
                      grid_bound(-double(want.offset), double(half_to_float(p.m)), 0, F::min_hi));
          }
        }
      }
    }
}

TEMPLATE_TEST_CASE("quantize with importance: deterministic, never worse than plain in weighted error",
                   "[formats]", LOWBIT_ALL_FORMATS) {
  using F = TestType;
  std::mt19937 rng(15);
  const int n = 8 * 256;
  std::vector<uint8_t> plain(size_t(row_bytes(F::type, n))), imp(plain.size()), again(plain.size());
  double sum_plain = 0, sum_imp = 0;
  for (int kind = 0; kind < 8; ++kind) {
    const std::vector<float> x = test_rows(rng, n, kind);
    std::vector<float> w(static_cast<size_t>(n));
    std::uniform_real_distribution<float> u(0.0f, 4.0f);
    for (auto& v : w) v = u(rng) * u(rng);
    if (kind == 3) std::fill(w.begin(), w.begin() + 40, 0.0f);  // zero weights are allowed
    quantize_row(F::type, x.data(), n, plain.data());
    quantize_row(F::type, x.data(), n, imp.data(), w.data());
    quantize_row(F::type, x.data(), n, again.data(), w.data());
    REQUIRE(imp == again);
    const double ep = weighted_error<F>(x, w, plain), ei = weighted_error<F>(x, w, imp);
    INFO("kind " << kind << " plain " << ep << " importance " << ei);
    // Per block the search keeps the plain result when it is better, so per row too.
    REQUIRE(ei <= ep * (1 + 1e-12));
    sum_plain += ep;
    sum_imp += ei;
  }
  // On gaussian rows with outliers clipping pays off (a search that never helps fails this).
  CHECK(sum_imp < sum_plain);
}

TEMPLATE_TEST_CASE("quantize: sign, zero and constant blocks come back exactly where representable",
                   "[formats]", LOWBIT_ALL_FORMATS) {
  using F = TestType;
  std::vector<float> x(F::block_size, 0.0f), y(F::block_size);
  std::vector<uint8_t> q(F::type_size);
  quantize_row(F::type, x.data(), F::block_size, q.data());
  decode_row(F::type, q.data(), F::block_size, y.data());
  for (float v : y) REQUIRE(v == 0.0f);
  // A block whose values sit on an exactly representable grid: codes times a power of two.
  std::mt19937 rng(16);
  for (int i = 0; i < F::block_size; ++i) x[size_t(i)] = float(random_code<F>(rng)) * 0.125f;
  for (int j = 0; j < nsub<F>(); ++j) {  // every sub-block spans the full code range
    x[size_t(j * F::sub_block)] = float(F::qmin) * 0.125f;
    x[size_t(j * F::sub_block + 1)] = float(F::qmax) * 0.125f;
  }
  if (!F::has_offset && F::type != Type::Q8_0) {
    quantize_row(F::type, x.data(), F::block_size, q.data());
    decode_row(F::type, q.data(), F::block_size, y.data());
    for (int i = 0; i < F::block_size; ++i) REQUIRE(y[size_t(i)] == x[size_t(i)]);
  }
}

TEST_CASE("Q4_0 exhaustive: every code with several d decodes to q * d and encodes back") {
  const Format& f = format(Type::Q4_0);
  const uint16_t ds[] = {0x3C00, 0xBC00, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x2E66, 0x5A5A};
  for (uint16_t d : ds)
    for (int lo = -8; lo <= 7; ++lo)
      for (int hi = -8; hi <= 7; ++hi) {
        uint8_t b[18];
        b[0] = uint8_t(d);
        b[1] = uint8_t(d >> 8);
        for (int i = 0; i < 16; ++i) b[2 + i] = uint8_t((lo + 8) | ((hi + 8) << 4));
        float y[32];
        Q4_0::decode(b, y);
        const double dv = half_to_float(d);
        for (int i = 0; i < 16; ++i) {
          REQUIRE(y[i] == float(double(lo) * dv));
          REQUIRE(y[16 + i] == float(double(hi) * dv));
        }
        uint8_t again[18];
        BlockParams p;
        p.d = d;
        encode_block(f, y, p, again);
        REQUIRE(std::memcmp(again, b, 18) == 0);
      }
}

TEST_CASE("Q8_0 exhaustive: all 256 codes with several d") {
  const uint16_t ds[] = {0x3C00, 0xB400, 0x0001, 0x03FF, 0x7BFF, 0x1234};
  for (uint16_t d : ds)
    for (int c0 = -128; c0 <= 127; c0 += 32) {
      uint8_t b[34];
      b[0] = uint8_t(d);
      b[1] = uint8_t(d >> 8);
      for (int i = 0; i < 32; ++i) b[2 + i] = uint8_t(int8_t(c0 + i));
      float y[32];
      Q8_0::decode(b, y);
      for (int i = 0; i < 32; ++i) REQUIRE(y[i] == float(double(c0 + i) * double(half_to_float(d))));
      uint8_t again[34];
      BlockParams p;
      p.d = d;
      encode_block(format(Type::Q8_0), y, p, again);
      REQUIRE(std::memcmp(again, b, 34) == 0);
    }
}
