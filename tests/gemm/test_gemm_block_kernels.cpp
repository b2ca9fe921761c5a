// test_gemm_block_kernels.cpp: the block-form (GGUF) kernels of every supported Isa equal the scalar
// reference bit for bit, for every format, over awkward shapes, extreme codes and sub-scales, every
// activation mode and any thread count.
#include "block_test_util.hpp"
#include "../support.hpp"

#include <lowbit/gemm/kernels_amx.hpp>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace lowbit;

namespace {

using lowbit::test::same_bits;

using lowbit::test::block_x;

const std::vector<Index> awkward = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65};

}  // namespace

TEST_CASE("block kernels of every Isa equal the reference for every format", "[gemm][blocks][kernels]") {
  std::set<cpu::Isa> ran;
  std::mt19937 rng(31);
  size_t i = 0;
  const test::Fill fills[] = {test::Fill::random, test::Fill::max, test::Fill::min, test::Fill::alternating};
  const ActivationQuant modes[] = {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::int8_per_group,
                                   ActivationQuant::float32};
  for (const test::BlockFormat& f : test::block_formats()) {
    std::vector<Index> ks;
    if (f.super_block == 32)
      ks = {32, 64, 96, 256, 1024 + 256};
    else
      ks = {256, 512, 1024 + 256};
    for (Index K : ks)
      for (int rep = 0; rep < 6; ++rep) {
        // Cycle M and N through the awkward sizes so each meets many K, formats and modes.
        const Index M = awkward[(i * 7 + 3) % awkward.size()], N = awkward[(i * 5) % awkward.size()];
        const test::Fill codes = fills[i % 4], scales = fills[(i / 4) % 4];
        const ActivationQuant mode = modes[(i + size_t(rep)) % 4];
        const bool extreme_x = i % 3 == 1, odd = i % 5 == 2;
        ++i;
        if (K > 1000 && M * N > 400) continue;  // the long K with smaller tiles keeps this quick
        const BlockWeights bw = test::random_blocks(f, N, K, rng, codes, scales, odd);
        const PackedWeights w = pack_weights(bw);
        const MatrixXfR x = block_x(M, K, rng, extreme_x);
        LinearOptions opt;
        opt.activations = mode;
        if (i % 4 == 0) {
          opt.epilogue.bias.assign(size_t(N), 0.125f);
          opt.epilogue.activation = Activation::silu;
        }
        const MatrixXfR ref = test::reference_block_linear(x, w, opt);
        for (cpu::Isa isa : cpu::supported_isas()) {
          cpu::ScopedIsa forced(isa);
          const MatrixXfR y = linear(x, w, opt);
          INFO("isa " << cpu::to_string(isa) << " format " << f.name << " M " << M << " N " << N << " K " << K
                      << " act " << to_string(mode) << " codes " << int(codes) << " scales " << int(scales)
                      << " odd halves " << odd << " extreme x " << extreme_x);
          REQUIRE(same_bits(y, ref));
          ran.insert(isa);
        }
      }
  }
  CHECK(ran.size() == cpu::supported_isas().size());
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) CHECK(ran.count(cpu::Isa::avx2) == 1);
  if (__builtin_cpu_supports("avx512vnni")) CHECK(ran.count(cpu::Isa::avx512_vnni) == 1);
  // Where the tiles are usable, block weights ran under Isa::amx, on its tile kernels (M >= 16 here).
  if (cpu::is_supported(cpu::Isa::amx)) CHECK(ran.count(cpu::Isa::amx) == 1);
  CHECK(detail::block_kernel_set(cpu::Isa::amx).linear_int != detail::block_kernel_set(cpu::Isa::avx512_vnni).linear_int);
#elif defined(__aarch64__)
  CHECK(ran.count(cpu::Isa::neon) == 1);
#endif
  if (const char* want = std::getenv("LOWBIT_REQUIRE_ISAS")) {
    std::string list = want;
    for (size_t p = 0; p < list.size();) {
      const size_t q = std::min(list.find(',', p), list.size());
      const cpu::Isa isa = cpu::parse_isa(list.substr(p, q - p));
      INFO("required isa " << cpu::to_string(isa));
      CHECK(ran.count(isa) == 1);
      p = q + 1;
    }
  }
}

TEST_CASE("block kernels: awkward M and N with every Isa, GEMV and prefill tiles", "[gemm][blocks][kernels]") {
  // Every M and N of the awkward list at least once per format family (the panel and row-tile
  // remainders of each Isa), K = one super-block.
  std::mt19937 rng(32);
  for (const char* name : {"Q4_0", "Q8_0", "Q5_1", "Q4_K", "Q6_K", "Q3_K", "Q2_K", "Q5_K"}) {
    const test::BlockFormat& f = test::block_format(name);
    for (Index M : awkward) {
      const Index N = awkward[size_t(M) % awkward.size()];
      const Index K = f.super_block == 32 ? 64 : 256;
      const PackedWeights w = pack_weights(test::random_blocks(f, N, K, rng));
      const MatrixXfR x = block_x(M, K, rng, false);
      for (auto mode : {ActivationQuant::int8, ActivationQuant::float32}) {
        LinearOptions opt;
        opt.activations = mode;
        const MatrixXfR ref = test::reference_block_linear(x, w, opt);
        for (cpu::Isa isa : cpu::supported_isas()) {
          cpu::ScopedIsa forced(isa);
          INFO("isa " << cpu::to_string(isa) << " format " << name << " M " << M << " N " << N << " act "
                      << to_string(mode));
          REQUIRE(same_bits(linear(x, w, opt), ref));
        }
      }
    }
  }
}

TEST_CASE("block kernels: every other configuration of the code form gives the reference bits", "[gemm][blocks][kernels]") {
  // The vector kernels cover GGUF's configurations; these run the portable kernels under every
  // Isa (and the float32 path's vector kernels): 2-bit with byte sub-scales, Q4_K-like without
  // offset or with a zero, legacy with longer super-blocks, 6-bit codes without sub-scales,
  // sub-scales without mins, 3-bit codes without sub-scales.
  std::mt19937 rng(34);
  auto make = [&](const char* base, auto edit) {
    BlockWeights w = test::random_blocks(test::block_format(base), 33, 512, rng);
    edit(w);
    return w;
  };
  std::vector<BlockWeights> others;
  others.push_back(make("Q2_K", [](BlockWeights& w) { w.sc[3] = 100; }));
  others.push_back(make("Q4_K", [](BlockWeights& w) { w.zero = 7; }));
  others.push_back(make("Q4_K", [](BlockWeights& w) { w.offset = false, w.m.clear(), w.mn.clear(); }));
  others.push_back(make("Q6_K", [](BlockWeights& w) {
    w.offset = true, w.m.assign(w.d.size(), 0xB000), w.mn.assign(w.sc.size(), 3);
  }));
  others.push_back(make("Q4_0", [](BlockWeights& w) { w.super_block = 64, w.d.resize(w.d.size() / 2); }));
  others.push_back(make("Q8_0", [](BlockWeights& w) {
    w.bits = 6, w.zero = 31;
    for (auto& u : w.codes) u = uint8_t(u % 64);
  }));
  others.push_back(make("Q4_1", [](BlockWeights& w) {
    w.bits = 3, w.zero = 0;
    for (auto& u : w.codes) u = uint8_t(u % 8);
  }));
  others.push_back(make("Q5_K", [](BlockWeights& w) { w.mn.clear(); }));
  for (size_t i = 0; i < others.size(); ++i) {
    const PackedWeights w = pack_weights(others[i]);
    for (Index M : {Index(1), Index(5)}) {
      const MatrixXfR x = block_x(M, 512, rng, i % 2 == 1);
      for (auto mode : {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::float32}) {
        LinearOptions opt;
        opt.activations = mode;
        const MatrixXfR ref = test::reference_block_linear(x, w, opt);
        for (cpu::Isa isa : cpu::supported_isas()) {
          cpu::ScopedIsa forced(isa);
          INFO("configuration " << i << " isa " << cpu::to_string(isa) << " M " << M << " act " << to_string(mode));
          REQUIRE(same_bits(linear(x, w, opt), ref));
        }
      }
    }
  }
}

TEST_CASE("block kernels: results do not depend on the number of threads", "[gemm][blocks][kernels]") {
#ifdef _OPENMP
  std::mt19937 rng(33);
  const Index M = 8, N = 1000, K = 512;  // large enough to run in parallel, with several parts
  for (const char* name : {"Q4_0", "Q4_K", "Q6_K", "Q2_K"}) {
    const PackedWeights w = pack_weights(test::random_blocks(test::block_format(name), N, K, rng));
    const MatrixXfR x = block_x(M, K, rng, false);
    for (auto act : {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::float32}) {
      LinearOptions opt;
      opt.activations = act;
      const int before = omp_get_max_threads();
      omp_set_num_threads(1);
      const MatrixXfR y1 = linear(x, w, opt);
      omp_set_num_threads(2);
      CHECK(detail::linear_threads(M, N, K) == 2);
      const MatrixXfR y2 = linear(x, w, opt);
      omp_set_num_threads(3);
      const MatrixXfR y3 = linear(x, w, opt);
      omp_set_num_threads(before);
      INFO("format " << name << " act " << to_string(act));
      CHECK(same_bits(y1, y2));
      CHECK(same_bits(y1, y3));
      CHECK(same_bits(y1, test::reference_block_linear(x, w, opt)));
    }
  }
#else
  SUCCEED("built without OpenMP: one thread only");
#endif
}
