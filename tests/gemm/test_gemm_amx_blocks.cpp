// test_gemm_amx_blocks.cpp: the AMX tiles for block-form (GGUF) weights, through the emulation on every
// machine and on the real tiles where the CPU has them, against the scalar reference block kernel and
// the vector block kernels, bit for bit.
#include "block_test_util.hpp"
#include "../support.hpp"

#include <lowbit/gemm/kernels_amx.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace lowbit;
using QA = detail::QuantizedActivations;

namespace {

using lowbit::test::same_bits;

using lowbit::test::block_x;

/// The activations as linear() hands them to the block kernels.
QA quantized(const MatrixXfR& x, const PackedWeights& w, ActivationQuant act) {
  QA a;
  detail::quantize_activations(x.data(), x.rows(), x.cols(), x.cols(), w, act, a);
  detail::block_activation_sums(a, w);
  return a;
}

using BlockFn = void (*)(const QA&, const PackedWeights&, float*, Index, Index, Index) noexcept;

MatrixXfR run(BlockFn fn, const QA& a, const PackedWeights& w, Index n0 = 0, Index n1 = -1, MatrixXfR* into = nullptr) {
  MatrixXfR y = into ? *into : MatrixXfR::Zero(a.rows, w.rows());
  fn(a, w, y.data(), y.cols(), n0, n1 < 0 ? w.rows() : n1);
  return y;
}

MatrixXfR reference(const QA& a, const PackedWeights& w) { return run(kernels::reference::linear_block_int, a, w); }

/// The emulated tiles, called directly (so the test fails if they stop applying).
MatrixXfR emu_tiles(const QA& a, const PackedWeights& w, Index n0 = 0, Index n1 = -1, MatrixXfR* into = nullptr) {
  MatrixXfR y = into ? *into : MatrixXfR::Zero(a.rows, w.rows());
  kernels::amx_emu::Tiles t;
  kernels::amx_emu::linear_block_int_tiles(t, a, w, y.data(), y.cols(), n0, n1 < 0 ? w.rows() : n1);
  return y;
}

/// Every supported Isa's block kernels other than amx (scalar, AVX2, AVX-512 VNNI, NEON ...) equal `want`.
void check_vector_kernels(const QA& a, const PackedWeights& w, const MatrixXfR& want) {
  for (cpu::Isa isa : cpu::supported_isas()) {
    if (isa == cpu::Isa::amx) continue;
    INFO("isa " << cpu::to_string(isa));
    REQUIRE(same_bits(run(detail::block_kernel_set(isa, w.block()).linear_int, a, w), want));
  }
}

const ActivationQuant int_modes[] = {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::int8_per_group};

}  // namespace

TEST_CASE("emulated AMX block tiles equal the reference and the vector kernels for every GGUF format", "[gemm][amx][blocks]") {
  const std::vector<Index> ms = {16, 17, 31, 32, 33, 48, 64, 65};
  const std::vector<Index> ns = {1, 3, 15, 16, 17, 31, 32, 33, 40, 47, 63};
  const test::Fill fills[] = {test::Fill::random, test::Fill::max, test::Fill::min, test::Fill::alternating};
  std::mt19937 rng(61);
  size_t i = 0;
  for (const test::BlockFormat& f : test::block_formats()) {
    const std::vector<Index> ks = f.super_block == 32 ? std::vector<Index>{32, 64, 96, 160, 512}
                                                      : std::vector<Index>{256, 512, 768};
    for (Index K : ks)
      for (int rep = 0; rep < 3; ++rep) {
        const Index M = ms[(i * 3 + 1) % ms.size()], N = ns[(i * 5) % ns.size()];
        const test::Fill codes = fills[i % 4], scales = fills[(i / 4) % 4];
        const ActivationQuant act = int_modes[(i + size_t(rep)) % 3];
        const bool extreme_x = i % 3 == 1, odd = i % 5 == 2;
        ++i;
        const PackedWeights w = pack_weights(test::random_blocks(f, N, K, rng, codes, scales, odd));
        const QA a = quantized(block_x(M, K, rng, extreme_x), w, act);
        INFO("format " << f.name << " M " << M << " N " << N << " K " << K << " act " << to_string(act) << " codes "
                       << int(codes) << " scales " << int(scales) << " odd halves " << odd << " extreme x " << extreme_x);
        REQUIRE(kernels::amx_emu::block_tiles_apply(a, w));
        const MatrixXfR ref = reference(a, w);
        REQUIRE(same_bits(emu_tiles(a, w), ref));
        REQUIRE(same_bits(run(kernels::amx_emu::linear_block_int, a, w), ref));
        check_vector_kernels(a, w, ref);
      }
  }
}

TEST_CASE("emulated AMX block tiles: Q8_0, Q4_0, Q4_K over awkward M, N and K", "[gemm][amx][blocks]") {
  std::mt19937 rng(62);
  for (const char* name : {"Q8_0", "Q4_0", "Q4_K"}) {
    const test::BlockFormat& f = test::block_format(name);
    for (Index M : {16, 17, 31, 33, 64, 65, 100})
      for (Index N : {1, 7, 16, 17, 33, 50})
        for (Index supers : {1, 2, 3}) {
          const Index K = supers * (f.super_block == 32 ? 96 : 256) - (f.super_block == 32 ? 64 : 0);  // 32, 128, 224 / 256 ...
          if (M * N * K > 700000) continue;
          const PackedWeights w = pack_weights(test::random_blocks(f, N, K, rng));
          const ActivationQuant act = int_modes[size_t(M + N + K) % 3];
          const QA a = quantized(block_x(M, K, rng, false), w, act);
          INFO("format " << name << " M " << M << " N " << N << " K " << K << " act " << to_string(act));
          const MatrixXfR ref = reference(a, w);
          REQUIRE(same_bits(emu_tiles(a, w), ref));
          check_vector_kernels(a, w, ref);
        }
  }
}

TEST_CASE("emulated AMX block tiles: extreme codes, zero and extreme scales", "[gemm][amx][blocks]") {
  std::mt19937 rng(63);
  for (const char* name : {"Q8_0", "Q4_0", "Q4_K", "Q4_1", "Q6_K", "Q2_K"}) {
    const test::BlockFormat& f = test::block_format(name);
    const Index K = f.super_block == 32 ? 128 : 512, N = 33, M = 33;
    for (int variant = 0; variant < 6; ++variant) {
      const test::Fill codes = variant % 2 ? test::Fill::max : test::Fill::min;
      const test::Fill scales = variant < 2 ? test::Fill::max : variant < 4 ? test::Fill::min : test::Fill::alternating;
      BlockWeights bw = test::random_blocks(f, N, K, rng, codes, scales, variant == 5);
      if (variant == 2) std::fill(bw.d.begin(), bw.d.end(), uint16_t(0));        // zero scales
      if (variant == 3) std::fill(bw.d.begin(), bw.d.end(), uint16_t(0x7BFF));   // 65504
      if (variant == 4 && !bw.m.empty()) std::fill(bw.m.begin(), bw.m.end(), uint16_t(0x8000));  // -0
      if (variant == 4 && !bw.sc.empty()) std::fill(bw.sc.begin(), bw.sc.end(), int16_t(0));
      const PackedWeights w = pack_weights(bw);
      for (ActivationQuant act : int_modes) {
        const QA a = quantized(block_x(M, K, rng, true), w, act);
        INFO("format " << name << " variant " << variant << " act " << to_string(act));
        const MatrixXfR ref = reference(a, w);
        REQUIRE(same_bits(emu_tiles(a, w), ref));
        check_vector_kernels(a, w, ref);
      }
    }
  }
}

TEST_CASE("emulated AMX block tiles: other configurations of the code form", "[gemm][amx][blocks]") {
  // Configurations the vector kernels hand to the portable one; the tiles take them when their
  // codes fit int8 and the super-block is at most 512 columns, and fall back otherwise.
  std::mt19937 rng(64);
  auto make = [&](const char* base, Index K, auto edit) {
    BlockWeights w = test::random_blocks(test::block_format(base), 37, K, rng);
    edit(w);
    return w;
  };
  struct Case {
    BlockWeights w;
    bool tiled;
  };
  std::vector<Case> cases;
  cases.push_back({make("Q2_K", 512, [](BlockWeights& w) { w.sc[3] = 100; }), true});  // byte sub-scales
  cases.push_back({make("Q4_K", 512, [](BlockWeights& w) { w.zero = 7; }), true});
  cases.push_back({make("Q4_K", 512, [](BlockWeights& w) { w.offset = false, w.m.clear(), w.mn.clear(); }), true});
  cases.push_back({make("Q6_K", 512, [](BlockWeights& w) {
                     w.offset = true, w.m.assign(w.d.size(), 0xB000), w.mn.assign(w.sc.size(), 3);
                   }), true});
  cases.push_back({make("Q4_0", 512, [](BlockWeights& w) { w.super_block = 64, w.d.resize(w.d.size() / 2); }), true});
  cases.push_back({make("Q4_1", 512, [](BlockWeights& w) {
                     w.super_block = 512, w.d.resize(w.d.size() / 16), w.m.resize(w.m.size() / 16);
                   }), true});
  cases.push_back({make("Q8_0", 512, [](BlockWeights& w) {
                     w.bits = 6, w.zero = 31;
                     for (auto& u : w.codes) u = uint8_t(u % 64);
                   }), true});
  cases.push_back({make("Q4_1", 512, [](BlockWeights& w) {
                     w.bits = 3, w.zero = 0;
                     for (auto& u : w.codes) u = uint8_t(u % 8);
                   }), true});
  cases.push_back({make("Q5_K", 512, [](BlockWeights& w) { w.mn.clear(); }), true});
  // Not on tiles: u - zero outside int8 (8-bit codes with zero 0), super-blocks over 512 columns.
  cases.push_back({make("Q8_0", 512, [](BlockWeights& w) { w.zero = 0; }), false});
  cases.push_back({make("Q4_0", 2048, [](BlockWeights& w) { w.super_block = 1024, w.d.resize(w.d.size() / 32); }),
                   false});
  for (size_t i = 0; i < cases.size(); ++i) {
    const PackedWeights w = pack_weights(cases[i].w);
    for (ActivationQuant act : int_modes) {
      const QA a = quantized(block_x(33, w.cols(), rng, i % 2 == 1), w, act);
      INFO("configuration " << i << " act " << to_string(act));
      REQUIRE(kernels::amx_emu::block_tiles_apply(a, w) == cases[i].tiled);
      const MatrixXfR ref = reference(a, w);
      if (cases[i].tiled) REQUIRE(same_bits(emu_tiles(a, w), ref));
      REQUIRE(same_bits(run(kernels::amx_emu::linear_block_int, a, w), ref));
      check_vector_kernels(a, w, ref);
    }
  }
}

TEST_CASE("emulated AMX block tiles: fewer than 16 rows run untiled with the same results", "[gemm][amx][blocks]") {
  std::mt19937 rng(65);
  for (const char* name : {"Q8_0", "Q4_0", "Q4_K"})
    for (Index M : {1, 2, 15}) {
      const test::BlockFormat& f = test::block_format(name);
      const PackedWeights w = pack_weights(test::random_blocks(f, 40, 2 * f.super_block, rng));
      const QA a = quantized(block_x(M, w.cols(), rng, false), w, ActivationQuant::int8);
      INFO("format " << name << " M " << M);
      CHECK(!kernels::amx_emu::block_tiles_apply(a, w));
      CHECK(same_bits(run(kernels::amx_emu::linear_block_int, a, w), reference(a, w)));
    }
}

TEST_CASE("emulated AMX block tiles give the same bytes for any split of N and any number of threads", "[gemm][amx][blocks]") {
  std::mt19937 rng(66);
  const Index M = 33, N = 100;
  for (const char* name : {"Q8_0", "Q4_0", "Q4_K"}) {
    const test::BlockFormat& f = test::block_format(name);
    const PackedWeights w = pack_weights(test::random_blocks(f, N, 2 * f.super_block, rng));
    const QA a = quantized(block_x(M, w.cols(), rng, false), w, ActivationQuant::int8);
    const MatrixXfR whole = emu_tiles(a, w);
    MatrixXfR parts = MatrixXfR::Zero(M, N);
    for (auto [n0, n1] : {std::pair<Index, Index>{0, 16}, {16, 48}, {48, 64}, {64, 100}})
      parts = emu_tiles(a, w, n0, n1, &parts);
    INFO("format " << name);
    CHECK(same_bits(whole, parts));
    CHECK(same_bits(whole, reference(a, w)));
#ifdef _OPENMP
    // Parts on concurrent threads (each with its own thread-local tile workspace).
    for (int threads : {2, 3}) {
      MatrixXfR y = MatrixXfR::Zero(M, N);
      const Index blocks = (N + 15) / 16;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
      for (Index b = 0; b < blocks; ++b)
        kernels::amx_emu::linear_block_int(a, w, y.data(), N, b * 16, std::min(N, b * 16 + 16));
      INFO("threads " << threads);
      CHECK(same_bits(whole, y));
    }
#endif
  }
}

#if defined(__x86_64__)
TEST_CASE("Isa::amx runs block-form weights on the AMX block kernels", "[gemm][amx][blocks]") {
  // The tables are compared, not kernel addresses: taking one would compile that kernel here too.
  CHECK(detail::block_kernel_set(cpu::Isa::amx).linear_int != detail::block_kernel_set(cpu::Isa::avx512_vnni).linear_int);
  CHECK(detail::block_kernel_set(cpu::Isa::amx).linear_f32 == detail::block_kernel_set(cpu::Isa::avx512_vnni).linear_f32);
  if (!cpu::is_supported(cpu::Isa::amx)) {
    SUCCEED("this CPU (or OS) has no AMX: linear() under Isa::amx runs on AMX machines only");
    return;
  }
  // linear() with the Isa forced, prefill shapes, 1..3 threads: the reference's bytes.
  std::mt19937 rng(67);
  for (const char* name : {"Q8_0", "Q4_0", "Q4_K", "Q6_K"}) {
    const test::BlockFormat& f = test::block_format(name);
    const PackedWeights w = pack_weights(test::random_blocks(f, 300, 4 * f.super_block, rng));
    const MatrixXfR x = block_x(48, w.cols(), rng, false);
    for (ActivationQuant act : {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::float32}) {
      LinearOptions opt;
      opt.activations = act;
      const MatrixXfR ref = test::reference_block_linear(x, w, opt);
      cpu::ScopedIsa forced(cpu::Isa::amx);
#ifdef _OPENMP
      const int before = omp_get_max_threads();
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        INFO("format " << name << " act " << to_string(act) << " threads " << threads);
        CHECK(same_bits(linear(x, w, opt), ref));
      }
      omp_set_num_threads(before);
#else
      INFO("format " << name << " act " << to_string(act));
      CHECK(same_bits(linear(x, w, opt), ref));
#endif
    }
  }
}

TEST_CASE("the AMX namespace's block code over emulated tiles equals the reference", "[gemm][amx][blocks]") {
  if (!cpu::is_supported(cpu::Isa::avx512_vnni)) {
    SUCCEED("this CPU has no AVX-512 VNNI: the AMX kernels' vector code cannot run here");
    return;
  }
  std::mt19937 rng(68);
  size_t i = 0;
  for (const test::BlockFormat& f : test::block_formats())
    for (ActivationQuant act : int_modes) {
      const Index M = i % 2 ? 17 : 48, N = i % 3 ? 33 : 20;
      ++i;
      const PackedWeights w = pack_weights(test::random_blocks(f, N, 2 * f.super_block, rng));
      const QA a = quantized(block_x(M, w.cols(), rng, i % 2 == 0), w, act);
      REQUIRE(kernels::amx::block_tiles_apply(a, w));
      MatrixXfR y = MatrixXfR::Zero(M, N);
      kernels::amx_tiles::Emulated t;
      kernels::amx::linear_block_int_tiles(t, a, w, y.data(), N, 0, N);
      INFO("format " << f.name << " act " << to_string(act));
      REQUIRE(same_bits(y, reference(a, w)));
    }
}

TEST_CASE("real AMX block kernels equal the reference", "[gemm][amx][blocks]") {
  if (!cpu::is_supported(cpu::Isa::amx)) {
    SUCCEED("this CPU (or OS) has no AMX");
    return;
  }
  std::mt19937 rng(69);
  size_t i = 0;
  for (const test::BlockFormat& f : test::block_formats())
    for (ActivationQuant act : int_modes) {
      const Index M = i % 2 ? 17 : 128, N = i % 3 ? 65 : 20;
      ++i;
      const PackedWeights w = pack_weights(test::random_blocks(f, N, 3 * f.super_block, rng,
                                                               i % 2 ? test::Fill::max : test::Fill::random));
      const QA a = quantized(block_x(M, w.cols(), rng, i % 2 == 1), w, act);
      REQUIRE(kernels::amx::block_tiles_apply(a, w));
      INFO("format " << f.name << " act " << to_string(act));
      REQUIRE(same_bits(run(detail::block_kernel_set(cpu::Isa::amx).linear_int, a, w), reference(a, w)));
    }
}
#endif
