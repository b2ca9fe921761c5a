// test_gemm_gguf_weights.cpp: pack_weights(formats::Type, blocks, rows, cols) for every GGUF format
// with a kernel layout: the code form is exactly formats' decode; weight-only linear() on the
// packed blocks is x * decode(W)^T within fp32 rounding and W*A8 is the reference kernel's integer
// math bit for bit, under every Isa this CPU runs; refused types and inputs; block weights never
// reach the AMX tiles.
#include "block_test_util.hpp"
#include "../support.hpp"

#include <lowbit/gemm/gguf_weights.hpp>
#include <lowbit/gemm/kernels_amx.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace lowbit;
using formats::Type;

namespace {

const std::vector<Type>& kernel_types() {
  static const std::vector<Type> t = {Type::Q8_0, Type::Q4_0, Type::Q4_1, Type::Q5_0, Type::Q5_1,
                                      Type::Q2_K, Type::Q3_K, Type::Q4_K, Type::Q5_K, Type::Q6_K};
  return t;
}

using lowbit::test::same_bits;

using lowbit::test::float_bits;

/// A GGUF tensor of `type` [N][K]: rows of normal values with outliers quantized by formats'
/// reference rounding, a zero row, rows of huge and of tiny values (fp16 scales at the top and in
/// the subnormals), then some blocks rewritten with extreme stored fields (d = ±65504, the
/// smallest and largest subnormal, -0; codes at qmin/qmax; min/dmin large).
std::vector<uint8_t> gguf_tensor(Type type, Index N, Index K, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  MatrixXfR W(N, K);
  for (Index n = 0; n < N; ++n)
    for (Index k = 0; k < K; ++k) {
      float v = normal(rng);
      if (uni(rng) < 0.02f) v *= 12.0f;  // outliers
      if (n % 7 == 3) v *= 2000.0f;      // huge scales
      if (n % 7 == 5) v *= 1e-6f;        // subnormal scales
      if (n % 7 == 1) v = std::fabs(v) + 0.5f;  // all positive: offsets > 0 for Q4_1/Q5_1
      W(n, k) = n == 0 ? 0.0f : v;
    }
  std::vector<uint8_t> bytes = formats::quantize_matrix(type, W);
  const formats::Format& f = formats::format(type);
  const uint16_t ds[] = {0x7BFF, 0xFBFF, 0x0001, 0x03FF, 0x8000, 0x8001, 0x3C00};
  const size_t nblocks = bytes.size() / size_t(f.type_size);
  formats::BlockParams p;
  int8_t q[256];
  for (size_t b = 0; b < nblocks; b += 3) {
    uint8_t* block = bytes.data() + b * size_t(f.type_size);
    f.unpack(block, p, q);
    p.d = ds[(b / 3) % 7];
    if (f.has_offset) p.m = ds[(b / 3 + 2) % 7];
    if (f.min_hi != 0) p.m &= 0x7FFFu;  // dmin >= 0 as the format's writers store it (any sign is kept)
    for (int i = 0; i < f.block_size; ++i)
      if ((b / 3) % 4 == 1) q[i] = int8_t(f.qmax);
      else if ((b / 3) % 4 == 2) q[i] = int8_t(i % 2 ? f.qmin : f.qmax);
    for (int j = 0; j < f.sub_blocks() && f.scale_hi != 0; ++j)
      if ((b / 3) % 5 == 1) p.scales[size_t(j)] = int16_t(j % 2 ? f.scale_lo : f.scale_hi);
    for (int j = 0; j < f.sub_blocks() && f.min_hi != 0; ++j)
      if ((b / 3) % 5 == 2) p.mins[size_t(j)] = int16_t(f.min_hi);
    f.pack(p, q, block);
  }
  return bytes;
}

Index cols_for(Type type) { return formats::format(type).block_size == 32 ? 160 : 512; }

MatrixXfR random_x(Index M, Index K, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  MatrixXfR x(M, K);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  return x;
}

}  // namespace

TEST_CASE("gguf pack_weights: every weight of the code form is formats' decode, bit for bit", "[gemm][gguf]") {
  std::mt19937 rng(71);
  for (Type type : kernel_types()) {
    const Index N = 21, K = cols_for(type);
    const std::vector<uint8_t> bytes = gguf_tensor(type, N, K, rng);
    const MatrixXfR want = formats::decode_matrix(type, bytes.data(), N, K);
    const BlockWeights bw = block_weights(type, bytes.data(), N, K);
    const PackedWeights w = pack_weights(type, bytes.data(), N, K);
    const formats::Format& f = formats::format(type);
    INFO("type " << f.name);
    REQUIRE(w.is_block());
    CHECK(w.rows() == N);
    CHECK(w.cols() == K);
    CHECK(bw.bits == (type == Type::Q8_0 ? 8 : type == Type::Q6_K ? 6 : type == Type::Q2_K ? 2 : type == Type::Q3_K ? 3
                      : (type == Type::Q5_0 || type == Type::Q5_1 || type == Type::Q5_K) ? 5 : 4));
    CHECK(bw.zero == (f.has_offset ? 0 : -f.qmin));
    CHECK(bw.super_block == f.block_size);
    CHECK(bw.offset == f.has_offset);
    CHECK(bw.sc.empty() == (f.scale_hi == 0));
    CHECK(bw.mn.empty() == (f.min_hi == 0));
    const BlockLayout& L = w.block();
    size_t mismatches = 0;
    for (Index n = 0; n < N; ++n)
      for (Index k = 0; k < K; ++k) {
        // decode's arithmetic on the packed fields: (d * sc) * (u - zero), plus m * mn (each
        // product exact in float, one rounding for the sum).
        const Index s = k / L.super_block(), j = k / L.sub_block();
        const float d = detail::half_bits_to_float(L.d_bits(n, s));
        float v = (d * float(L.sub_scale(n, j))) * float(L.code(n, k) - L.zero());
        if (L.offset()) {
          const float add = detail::half_bits_to_float(L.m_bits(n, s)) * float(L.sub_min(n, j));
          v = v + add;
        }
        mismatches += float_bits(v) != float_bits(want(n, k));
        // And the code form itself (test::block_value is exact in double).
        mismatches += float(test::block_value(bw, n, k)) != want(n, k);
      }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("gguf pack_weights: weight-only linear() is x * decode(W)^T within fp32 rounding, every Isa",
          "[gemm][gguf]") {
  std::mt19937 rng(72);
  std::set<cpu::Isa> ran;
  for (Type type : kernel_types()) {
    const Index M = 5, N = 19, K = cols_for(type);
    const std::vector<uint8_t> bytes = gguf_tensor(type, N, K, rng);
    const MatrixXfR W = formats::decode_matrix(type, bytes.data(), N, K);
    const BlockWeights bw = block_weights(type, bytes.data(), N, K);
    const PackedWeights w = pack_weights(type, bytes.data(), N, K);
    const MatrixXfR x = random_x(M, K, rng);
    const formats::Format& f = formats::format(type);
    const Index J = bw.sub_block;
    LinearOptions opt;
    opt.activations = ActivationQuant::float32;
    MatrixXfR first;
    for (cpu::Isa isa : cpu::supported_isas()) {
      cpu::ScopedIsa scoped(isa);
      ran.insert(isa);
      const MatrixXfR y = linear(x, w, opt);
      if (first.size() == 0) first = y;
      INFO("type " << f.name << " isa " << cpu::to_string(isa));
      CHECK(same_bits(y, first));  // every Isa the same bytes
      for (Index m = 0; m < M; ++m)
        for (Index n = 0; n < N; ++n) {
          // mag bounds every partial sum: sum |x| * (|d * sc * (u - zero)| + |m * mn|); each of the
          // J-long fma chains and the K / J fmas into the total rounds once (2^-24 relative).
          double exact = 0, mag = 0;
          for (Index k = 0; k < K; ++k) {
            exact += double(x(m, k)) * double(W(n, k));
            const Index s = k / bw.super_block, j = k / J;
            const double d = detail::half_bits_to_float(bw.d[size_t(n * (K / bw.super_block) + s)]);
            const double sc = bw.sc.empty() ? 1 : bw.sc[size_t(n * (K / J) + j)];
            const double mo = bw.offset ? detail::half_bits_to_float(bw.m[size_t(n * (K / bw.super_block) + s)]) : 0;
            const double mn = bw.mn.empty() ? 1 : bw.mn[size_t(n * (K / J) + j)];
            mag += std::fabs(double(x(m, k))) *
                   (std::fabs(d * sc * (int(bw.codes[size_t(n * K + k)]) - bw.zero)) + std::fabs(mo * mn));
          }
          const double tol = 0x1p-24 * double(J + K / J + 4) * mag;
          REQUIRE(std::fabs(double(y(m, n)) - exact) <= tol);
        }
    }
  }
  CHECK(ran.size() == cpu::supported_isas().size());
}

TEST_CASE("gguf pack_weights: W*A8 is the reference kernel's integer math bit for bit, every Isa and mode",
          "[gemm][gguf]") {
  std::mt19937 rng(73);
  const ActivationQuant modes[] = {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::int8_per_group};
  size_t i = 0;
  for (Type type : kernel_types())
    for (Index M : {Index(1), Index(3), Index(17), Index(33)}) {
      const Index N = 1 + Index((i * 7) % 37), K = cols_for(type) * (i % 2 ? 2 : 1);
      const std::vector<uint8_t> bytes = gguf_tensor(type, N, K, rng);
      const PackedWeights w = pack_weights(type, bytes.data(), N, K);
      const MatrixXfR x = random_x(M, K, rng);
      LinearOptions opt;
      opt.activations = modes[i % 3];
      if (i % 4 == 1) opt.epilogue.activation = Activation::silu;
      ++i;
      const MatrixXfR want = test::reference_block_linear(x, w, opt);
      // The W*A8 result stays near x * decode(W)^T (int8 activation rounding only).
      const MatrixXfR Wd = formats::decode_matrix(type, bytes.data(), N, K);
      const MatrixXfR exact = x * Wd.transpose();
      for (cpu::Isa isa : cpu::supported_isas()) {
        cpu::ScopedIsa scoped(isa);
        INFO("type " << formats::to_string(type) << " M " << M << " N " << N << " K " << K << " mode "
                     << to_string(opt.activations) << " isa " << cpu::to_string(isa));
        const MatrixXfR y = linear(x, w, opt);
        CHECK(same_bits(y, want));
        if (opt.epilogue.activation == Activation::none)
          for (Index m = 0; m < M; ++m)
            for (Index n = 0; n < N; ++n) {
              // Each activation is off by at most amax/127 (half a step of any of the modes);
              // plus fp32 rounding.
              const double amax = x.row(m).cwiseAbs().maxCoeff();
              const double wabs = Wd.row(n).cwiseAbs().sum();
              const double xw = x.row(m).cwiseAbs().dot(Wd.row(n).cwiseAbs());
              CHECK(std::fabs(double(y(m, n)) - double(exact(m, n))) <= amax / 127 * wabs + 1e-5 * xw);
            }
      }
    }
}

TEST_CASE("gguf pack_weights refuses types without a kernel layout and bad input", "[gemm][gguf]") {
  using Catch::Matchers::Contains;
  std::vector<uint8_t> bytes(4096 * 8, 0);
  for (Type t : {Type::IQ4_NL, Type::IQ4_XS, Type::F16, Type::BF16, Type::F32, Type::Q8_1, Type::Q8_K,
                 Type::IQ2_XXS, Type::TQ1_0}) {
    INFO(formats::to_string(t));
    CHECK_FALSE(has_block_kernels(t));
    CHECK_THROWS_WITH(pack_weights(t, bytes.data(), 2, 256),
                      Contains(formats::to_string(t)) && Contains("no block kernel layout") &&
                          Contains("Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"));
  }
  for (Type t : kernel_types()) CHECK(has_block_kernels(t));
  CHECK_THROWS_WITH(pack_weights(Type::Q4_K, bytes.data(), 2, 64), Contains("cols: 64") && Contains("Q4_K"));
  CHECK_THROWS_WITH(pack_weights(Type::Q4_0, bytes.data(), 2, 48), Contains("cols: 48"));
  CHECK_THROWS_WITH(pack_weights(Type::Q4_0, bytes.data(), 0, 32), Contains("rows, cols"));
  CHECK_THROWS_WITH(pack_weights(Type::Q4_0, bytes.data(), 2, 0), Contains("rows, cols"));
  CHECK_THROWS_WITH(pack_weights(Type::Q4_0, nullptr, 2, 32), Contains("blocks"));
  // Non-finite stored halves, named by row and block.
  std::mt19937 rng(74);
  for (Type t : {Type::Q8_0, Type::Q4_1, Type::Q4_K, Type::Q6_K}) {
    const formats::Format& f = formats::format(t);
    const Index N = 3, K = 2 * f.block_size;
    std::vector<uint8_t> good = gguf_tensor(t, N, K, rng);
    CHECK_NOTHROW(pack_weights(t, good.data(), N, K));
    for (bool on_m : {false, true}) {
      if (on_m && !f.has_offset) continue;
      std::vector<uint8_t> bad = good;
      uint8_t* block = bad.data() + size_t(2 * 2 + 1) * size_t(f.type_size);  // row 2, block 1
      formats::BlockParams p;
      int8_t q[256];
      f.unpack(block, p, q);
      (on_m ? p.m : p.d) = on_m ? 0xFE00 : 0x7C00;  // NaN, +inf
      f.pack(p, q, block);
      INFO(f.name << (on_m ? " m" : " d"));
      CHECK_THROWS_WITH(pack_weights(t, bad.data(), N, K), Contains("row 2 block 1") && Contains("finite"));
    }
  }
}

TEST_CASE("gguf pack_weights: block weights run on the AMX block tiles with the reference's bits", "[gemm][gguf][amx]") {
  std::mt19937 rng(75);
  for (Type type : {Type::Q8_0, Type::Q4_0, Type::Q4_K, Type::Q6_K}) {
    const Index M = 32, N = 40, K = 512;
    const std::vector<uint8_t> bytes = gguf_tensor(type, N, K, rng);
    const PackedWeights w = pack_weights(type, bytes.data(), N, K);
    const MatrixXfR x = random_x(M, K, rng);
    detail::QuantizedActivations a;
    detail::quantize_activations(x.data(), M, K, K, w, ActivationQuant::int8, a);
    detail::block_activation_sums(a, w);
    INFO(formats::to_string(type));
    // The tile driver of lowbit's own int weights refuses block layouts; the AMX entry hands them
    // to the block tile driver (amx_block_body.hpp) instead.
    CHECK_FALSE(kernels::amx_emu::tiles_apply(a, w));
    MatrixXfR want(M, N), got(M, N);
    kernels::reference::linear_block_int(a, w, want.data(), N, 0, N);
    got.setConstant(-1.0f);
    kernels::amx_emu::linear_int(a, w, got.data(), N, 0, N);  // the emulated AMX KernelSet entry
    CHECK(same_bits(got, want));
  }
#if defined(LOWBIT_X86)
  // Under Isa::amx linear() runs integer block weights on the tiles, weight-only on AVX-512 VNNI.
  CHECK(detail::block_kernel_set(cpu::Isa::amx).linear_int != detail::block_kernel_set(cpu::Isa::avx512_vnni).linear_int);
  CHECK(detail::block_kernel_set(cpu::Isa::amx).linear_f32 == detail::block_kernel_set(cpu::Isa::avx512_vnni).linear_f32);
#endif
}
