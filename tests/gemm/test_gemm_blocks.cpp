// test_gemm_blocks.cpp: pack_weights(BlockWeights) keeps every code and parameter of every GGUF
// format at the format's density; linear() on them is the documented integer math (checked
// against an independent int64 computation) and, weight-only, x * decode(W)^T within fp32
// rounding; every rejected input throws.
#include "block_test_util.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

using namespace lowbit;

namespace {

bool same_bits(const MatrixXfR& a, const MatrixXfR& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * size_t(a.size())) == 0;
}

/// GGUF's bytes per 256 weights of a row, and what BlockLayout stores.
struct Density {
  const char* name;
  size_t gguf, packed;
};
const Density densities[] = {{"Q8_0", 272, 272}, {"Q4_0", 144, 144}, {"Q4_1", 160, 160}, {"Q5_0", 176, 176},
                             {"Q5_1", 192, 192}, {"Q2_K", 84, 84},   {"Q3_K", 110, 114}, {"Q4_K", 144, 148},
                             {"Q5_K", 176, 180}, {"Q6_K", 210, 210}};

}  // namespace

TEST_CASE("pack_weights keeps every code, sub-scale, sub-min and fp16 scale of every format", "[gemm][blocks][pack]") {
  std::mt19937 rng(41);
  const test::Fill fills[] = {test::Fill::random, test::Fill::max, test::Fill::min, test::Fill::alternating};
  int f_i = 0;
  for (const test::BlockFormat& f : test::block_formats())
    for (Index N : {Index(1), Index(17), Index(33)})
      for (Index mult : {Index(1), Index(2), Index(5)}) {
        const Index K = f.super_block * mult;
        const test::Fill codes = fills[f_i % 4], scales = fills[(f_i / 4) % 4];
        ++f_i;
        const BlockWeights bw = test::random_blocks(f, N, K, rng, codes, scales, f_i % 3 == 0);
        const PackedWeights p = pack_weights(bw);
        INFO("format " << f.name << " N " << N << " K " << K);
        REQUIRE(p.is_block());
        REQUIRE(p.rows() == N);
        REQUIRE(p.cols() == K);
        const BlockLayout& L = p.block();
        CHECK(L.bits() == f.bits);
        CHECK(L.zero() == f.zero);
        CHECK(L.offset() == f.offset);
        CHECK(p.groups() == K / f.super_block);
        CHECK(p.group_size() == f.super_block);
        const Index nsup = K / f.super_block, nsub = K / f.sub_block;
        for (Index n = 0; n < N; ++n) {
          for (Index k = 0; k < K; ++k) REQUIRE(p.code(n, k) == bw.codes[size_t(n * K + k)]);
          for (Index s = 0; s < nsup; ++s) {
            REQUIRE(L.d_bits(n, s) == bw.d[size_t(n * nsup + s)]);
            REQUIRE(L.m_bits(n, s) == (f.offset ? bw.m[size_t(n * nsup + s)] : 0));
            int32_t ws = 0, ms = 0;
            for (Index k = s * f.super_block; k < (s + 1) * f.super_block; ++k)
              ws += (bw.sc.empty() ? 1 : bw.sc[size_t(n * nsub + k / f.sub_block)]) * (bw.codes[size_t(n * K + k)] - f.zero);
            for (Index j = s * f.super_block / f.sub_block; j < (s + 1) * f.super_block / f.sub_block; ++j)
              ms += (bw.mn.empty() ? 1 : bw.mn[size_t(n * nsub + j)]) * int32_t(f.sub_block);
            REQUIRE(L.wsum(n, s) == ws);
            REQUIRE(L.msum(n, s) == (f.offset ? ms : 0));
          }
          for (Index j = 0; j < nsub; ++j) {
            REQUIRE(L.sub_scale(n, j) == (bw.sc.empty() ? 1 : bw.sc[size_t(n * nsub + j)]));
            REQUIRE(L.sub_min(n, j) == (!f.offset ? 0 : bw.mn.empty() ? 1 : bw.mn[size_t(n * nsub + j)]));
          }
        }
      }
}

TEST_CASE("block formats keep their density; Q2_K's sub-scales stay nibbles", "[gemm][blocks][pack]") {
  std::mt19937 rng(42);
  for (const Density& d : densities) {
    const test::BlockFormat& f = test::block_format(d.name);
    const Index N = 32, K = 512;
    const PackedWeights p = pack_weights(test::random_blocks(f, N, K, rng));
    INFO("format " << d.name);
    CHECK(p.weight_bytes() == size_t(N) * (size_t(K) / 256) * d.packed);
    CHECK(p.block().record_bytes() % 32 == 0);
  }
  const PackedWeights q2 = pack_weights(test::random_blocks(test::block_format("Q2_K"), 16, 256, rng));
  CHECK(q2.block().sc_store() == BlockLayout::Scales::nibbles);
  CHECK(q2.block().mn_store() == BlockLayout::Scales::nibbles);
  // Nibbles are Q2_K's storage only: Q4_K with every sub-scale below 16 keeps bytes, and 2-bit
  // weights whose sub-scales do not fit a nibble switch to bytes, with the same values.
  const BlockWeights small = test::random_blocks(test::block_format("Q4_K"), 16, 256, rng, test::Fill::random,
                                                 test::Fill::min);
  CHECK(pack_weights(small).block().sc_store() == BlockLayout::Scales::int8);
  BlockWeights wide = test::random_blocks(test::block_format("Q2_K"), 16, 256, rng);
  wide.sc[5] = 40;
  const PackedWeights q2w = pack_weights(wide);
  CHECK(q2w.block().sc_store() == BlockLayout::Scales::int8);
  for (Index j = 0; j < 16; ++j) CHECK(q2w.block().sub_scale(0, j) == wide.sc[size_t(j)]);
  const PackedWeights q6 = pack_weights(test::random_blocks(test::block_format("Q6_K"), 16, 256, rng));
  CHECK(q6.block().sc_store() == BlockLayout::Scales::int8);
  CHECK(q6.block().kind() == BlockLayout::Kind::b6_s16);
  CHECK(q6.block().unit_cols() == 8);
}

TEST_CASE("block W*A8 is the documented integer math, computed independently", "[gemm][blocks][linear]") {
  std::mt19937 rng(43);
  const test::Fill fills[] = {test::Fill::random, test::Fill::max, test::Fill::min, test::Fill::alternating};
  int i = 0;
  for (const test::BlockFormat& f : test::block_formats())
    for (auto mode : {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::int8_per_group}) {
      const Index M = 3, N = 21, K = f.super_block == 32 ? 96 : 512;
      const test::Fill fill = fills[i++ % 4];
      const BlockWeights bw = test::random_blocks(f, N, K, rng, fill, fill, i % 2 == 0);
      const PackedWeights w = pack_weights(bw);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      MatrixXfR x(M, K);
      for (Index k = 0; k < x.size(); ++k) x.data()[k] = normal(rng);
      LinearOptions opt;
      opt.activations = mode;
      const MatrixXfR y = linear(x, w, opt);
      // The activation codes come from the (separately tested) quantizer; everything after is here.
      detail::QuantizedActivations a;
      detail::quantize_activations(x.data(), M, K, K, w, mode, a);
      const Index nsup = K / f.super_block, nsub = K / f.sub_block;
      MatrixXfR want(M, N);
      for (Index m = 0; m < M; ++m)
        for (Index n = 0; n < N; ++n) {
          float t = 0.0f;
          for (Index s = 0; s < nsup; ++s) {
            long long A = 0, B = 0;
            for (Index k = s * f.super_block; k < (s + 1) * f.super_block; ++k) {
              const long long c = (long long)a.row(m)[k] - a.zero[size_t(m)];
              const long long sc = bw.sc.empty() ? 1 : bw.sc[size_t(n * nsub + k / f.sub_block)];
              const long long mn = bw.mn.empty() ? 1 : bw.mn[size_t(n * nsub + k / f.sub_block)];
              A += sc * c * (long long)(int(bw.codes[size_t(n * K + k)]) - f.zero);
              B += mn * c;
            }
            REQUIRE(std::llabs(A) < (1LL << 31));
            REQUIRE(std::llabs(B) < (1LL << 31));
            const float d = detail::half_bits_to_float(bw.d[size_t(n * nsup + s)]);
            const float mo = f.offset ? detail::half_bits_to_float(bw.m[size_t(n * nsup + s)]) : 0.0f;
            const bool pg = mode == ActivationQuant::int8_per_group;
            const float sa = pg ? a.scale[size_t(m * nsup + s)] : 1.0f;
            t = std::fma(float(A), pg ? d * sa : d, t);
            if (f.offset) t = std::fma(float(B), pg ? mo * sa : mo, t);
          }
          want(m, n) = mode == ActivationQuant::int8_per_group ? t : t * a.scale[size_t(m)];
        }
      INFO("format " << f.name << " act " << to_string(mode));
      CHECK(same_bits(y, want));
    }
}

TEST_CASE("block weight-only linear() is x * decode(W)^T within fp32 rounding", "[gemm][blocks][linear]") {
  std::mt19937 rng(44);
  for (const test::BlockFormat& f : test::block_formats()) {
    const Index M = 4, N = 19, K = f.super_block == 32 ? 160 : 512;
    const BlockWeights bw = test::random_blocks(f, N, K, rng);
    const PackedWeights w = pack_weights(bw);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    MatrixXfR x(M, K);
    for (Index k = 0; k < x.size(); ++k) x.data()[k] = normal(rng);
    LinearOptions opt;
    opt.activations = ActivationQuant::float32;
    const MatrixXfR y = linear(x, w, opt);
    for (Index m = 0; m < M; ++m)
      for (Index n = 0; n < N; ++n) {
        // mag bounds every partial sum: sum |x| * (|d * sc * (u - zero)| + |m * mn|).
        double exact = 0, mag = 0;
        const Index nsup = K / f.super_block, nsub = K / f.sub_block;
        for (Index k = 0; k < K; ++k) {
          exact += double(x(m, k)) * test::block_value(bw, n, k);
          const double d = detail::half_bits_to_float(bw.d[size_t(n * nsup + k / f.super_block)]);
          const double sc = bw.sc.empty() ? 1 : bw.sc[size_t(n * nsub + k / f.sub_block)];
          const double mo = f.offset ? detail::half_bits_to_float(bw.m[size_t(n * nsup + k / f.super_block)]) : 0;
          const double mn = bw.mn.empty() ? 1 : bw.mn[size_t(n * nsub + k / f.sub_block)];
          mag += std::fabs(double(x(m, k))) *
                 (std::fabs(d * sc * (int(bw.codes[size_t(n * K + k)]) - f.zero)) + std::fabs(mo * mn));
        }
        // Every step rounds once (2^-24 relative): chains of sub_block fmas, then K / sub_block
        // fmas into t, so |error| <= 2^-24 * (sub_block + K / sub_block + 4) * mag.
        const double tol = 0x1p-24 * double(f.sub_block + K / f.sub_block + 4) * mag;
        INFO("format " << f.name << " m " << m << " n " << n);
        REQUIRE(std::fabs(double(y(m, n)) - exact) <= tol);
      }
  }
}

TEST_CASE("pack_weights(BlockWeights) rejects what the kernels cannot run", "[gemm][blocks][pack]") {
  std::mt19937 rng(45);
  const BlockWeights good = test::random_blocks(test::block_format("Q4_K"), 4, 512, rng);
  CHECK_NOTHROW(pack_weights(good));
  auto bad = [&](auto edit, const char* what) {
    BlockWeights w = good;
    edit(w);
    INFO("expecting an error about " << what);
    CHECK_THROWS_AS(pack_weights(w), Error);
    CHECK_THROWS_WITH(pack_weights(w), Catch::Contains(what));
  };
  bad([](BlockWeights& w) { w.rows = 0; }, "non-empty");
  bad([](BlockWeights& w) { w.bits = 1; }, "w.bits");
  bad([](BlockWeights& w) { w.bits = 9; }, "w.bits");
  bad([](BlockWeights& w) { w.zero = 16; }, "w.zero");
  bad([](BlockWeights& w) { w.zero = -1; }, "w.zero");
  bad([](BlockWeights& w) { w.super_block = 48; }, "w.super_block");
  bad([](BlockWeights& w) { w.cols = 500; }, "w.cols");
  bad([](BlockWeights& w) { w.sub_block = 64; }, "w.sub_block");
  bad([](BlockWeights& w) { w.codes.pop_back(); }, "w.codes");
  bad([](BlockWeights& w) { w.codes[77] = 16; }, "w.codes[77]");
  bad([](BlockWeights& w) { w.d.push_back(0); }, "w.d");
  bad([](BlockWeights& w) { w.d[3] = 0x7C00; }, "w.d[3]");       // +inf
  bad([](BlockWeights& w) { w.d[2] = 0xFE00; }, "w.d[2]");       // NaN
  bad([](BlockWeights& w) { w.m[1] = 0xFC00; }, "w.m[1]");       // -inf
  bad([](BlockWeights& w) { w.m.clear(); }, "w.m");
  bad([](BlockWeights& w) { w.offset = false; }, "w.m");
  bad([](BlockWeights& w) { w.sc.pop_back(); }, "w.sc");
  bad([](BlockWeights& w) { w.sc[5] = 128; }, "w.sc[5]");
  bad([](BlockWeights& w) { w.sc[6] = -129; }, "w.sc[6]");
  bad([](BlockWeights& w) { w.mn[7] = 200; }, "w.mn[7]");
  bad([](BlockWeights& w) { w.mn.resize(3); }, "w.mn");
  bad([](BlockWeights& w) { w.bits = 8, w.zero = 128; }, "not supported");  // 8-bit codes with sub-scales
  bad([](BlockWeights& w) { w.bits = 6, w.zero = 32; }, "not supported");   // 6 bits, 32-column sub-blocks
  // Sub-scale pairs: an odd number of sub-blocks per super-block.
  bad([](BlockWeights& w) { w.super_block = 32, w.d.resize(size_t(w.rows * w.cols / 32)), w.m.resize(w.d.size()); },
      "even");
  {
    // Without sc and mn the sub-block is 32.
    BlockWeights w = test::random_blocks(test::block_format("Q4_0"), 4, 64, rng);
    w.sub_block = 16;
    CHECK_THROWS_WITH(pack_weights(w), Catch::Contains("w.sub_block"));
  }
  {
    // The int32 bound: 8-bit codes in one 2^17-column super-block (no sub-scales) could overflow,
    // 6-bit codes with sub-scales of 16 columns overflow at 2048-column super-blocks.
    BlockWeights w;
    w.rows = 1;
    w.bits = 6;
    w.zero = 32;
    w.sub_block = 16;
    w.super_block = w.cols = 2048;
    w.codes.assign(2048, 0);
    w.d.assign(1, 0x3C00);
    w.sc.assign(2048 / 16, 1);
    CHECK_THROWS_WITH(pack_weights(w), Catch::Contains("int32"));
    w.super_block = w.cols = 1024;
    w.codes.assign(1024, 0);
    w.sc.assign(1024 / 16, 1);
    CHECK_NOTHROW(pack_weights(w));
    BlockWeights e;
    e.rows = 1;
    e.bits = 8;
    e.zero = 128;
    e.sub_block = 32;
    e.super_block = e.cols = 1 << 17;
    e.codes.assign(size_t(e.cols), 0);
    e.d.assign(1, 0x3C00);
    CHECK_THROWS_WITH(pack_weights(e), Catch::Contains("int32"));
  }
}

TEST_CASE("linear() with block weights checks its input and supports every activation mode", "[gemm][blocks][linear]") {
  std::mt19937 rng(46);
  const PackedWeights w = pack_weights(test::random_blocks(test::block_format("Q4_0"), 20, 64, rng));
  MatrixXfR x = MatrixXfR::Random(2, 64);
  CHECK_THROWS_WITH(linear(MatrixXfR::Random(2, 63), w), Catch::Contains("columns"));
  x(1, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(linear(x, w), Catch::Contains("x(1, 5)"));
  x(1, 5) = 0.5f;
  for (auto mode : {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::int8_per_group,
                    ActivationQuant::float32}) {
    LinearOptions opt;
    opt.activations = mode;
    const MatrixXfR y = linear(x, w, opt);
    CHECK(same_bits(y, test::reference_block_linear(x, w, opt)));
  }
}
