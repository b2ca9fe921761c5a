// test_gemm_kernels.cpp: every kernel under every supported Isa equals the scalar reference bit
// for bit, over awkward shapes, extreme codes and zero points; results never depend on threads.
#include "gemm_test_util.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <set>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace lowbit;

namespace {

struct Case {
  int bits;
  Scheme scheme;
  ActivationQuant act;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (bool sym : {true, false}) {
    for (auto act : {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::float32}) {
      out.push_back({8, Scheme::per_channel(8, sym), act});
      out.push_back({4, Scheme::per_group(4, 32, sym), act});
    }
    out.push_back({4, Scheme::per_group(4, 128, sym), ActivationQuant::int8_per_group});
    out.push_back({4, Scheme::per_group(4, 64, sym), ActivationQuant::uint8});
    out.push_back({3, Scheme::per_group(3, 32, sym), ActivationQuant::int8});
    out.push_back({2, Scheme::per_channel(2, sym), ActivationQuant::float32});
    out.push_back({4, Scheme::per_channel(4, sym), ActivationQuant::int8});
    out.push_back({6, Scheme::per_group(6, 64, sym), ActivationQuant::uint8});
    out.push_back({8, Scheme::per_group(8, 32, sym), ActivationQuant::int8_per_group});
  }
  return out;
}

#if defined(__x86_64__)
/// True when Linux lists `flag` for the CPU in /proc/cpuinfo (false where there is none).
bool cpuinfo_has(const std::string& flag) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) return (line + " ").find(" " + flag + " ") != std::string::npos;
  return false;
}
#endif

bool same_bits(const MatrixXfR& a, const MatrixXfR& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * size_t(a.size())) == 0;
}

}  // namespace

TEST_CASE("every Isa equals the reference over awkward shapes and extreme codes", "[gemm][kernels]") {
  const std::vector<Index> ks = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65, 172, 1025};
  const std::vector<std::pair<Index, Index>> mn = {{1, 1}, {2, 15}, {3, 16}, {4, 17}, {5, 33}, {6, 63},
                                                   {7, 64}, {8, 65}, {9, 31}, {10, 32}, {15, 10},
                                                   {16, 9}, {17, 8}, {31, 7}, {33, 2}, {63, 3}, {65, 5}};
  std::set<cpu::Isa> ran;
  std::mt19937 rng(21);
  size_t i = 0;
  for (const Case& c : cases())
    for (Index K : ks)
      for (auto codes : {test::Codes::random, test::Codes::extreme}) {
        // Cycle through the (M, N) pairs so every shape meets many K and cases.
        const auto [M, N] = mn[i++ % mn.size()];
        if (K > 200 && M * N > 200) continue;  // K = 1025 with small M, N keeps this fast
        const auto w = test::random_packed(c.bits, N, K, c.scheme, rng, codes);
        const MatrixXfR x = test::random_x(M, K, rng, codes);
        LinearOptions opt;
        opt.activations = c.act;
        if (i % 3 == 0) {
          opt.epilogue.bias.assign(size_t(N), 0.25f);
          opt.epilogue.activation = i % 2 ? Activation::silu : Activation::relu;
        }
        const MatrixXfR ref = test::reference_linear(x, w, opt);
        for (cpu::Isa isa : cpu::supported_isas()) {
          cpu::ScopedIsa forced(isa);
          const MatrixXfR y = linear(x, w, opt);
          INFO("isa " << cpu::to_string(isa) << " bits " << c.bits << " sym " << c.scheme.symmetric
                      << " gs " << c.scheme.group_size << " act " << to_string(c.act) << " M " << M
                      << " N " << N << " K " << K << " extreme " << (codes == test::Codes::extreme));
          REQUIRE(same_bits(y, ref));
          ran.insert(isa);
        }
      }
  // The guard: every Isa this CPU supports really ran (a detection bug would drop one silently).
  CHECK(ran.size() == cpu::supported_isas().size());
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vnni")) CHECK(ran.count(cpu::Isa::avx512_vnni) == 1);
  if (__builtin_cpu_supports("avx2")) CHECK(ran.count(cpu::Isa::avx2) == 1);
  if (cpuinfo_has("amx_int8") && cpuinfo_has("amx_tile") && __builtin_cpu_supports("avx512vnni"))
    CHECK(ran.count(cpu::Isa::amx) == 1);
#elif defined(__aarch64__)
  CHECK(ran.count(cpu::Isa::neon) == 1);
#endif
  // scripts/test.sh names the Isas an emulated CPU must have (e.g. "neon,neon_dotprod"), or that a
  // machine must run (e.g. "amx" where /proc/cpuinfo lists amx_int8).
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

TEST_CASE("results do not depend on the number of threads", "[gemm][kernels]") {
#ifdef _OPENMP
  std::mt19937 rng(22);
  const Index M = 16, N = 200, K = 640;  // large enough to run in parallel
  for (int bits : {8, 4}) {
    const Scheme s = bits == 8 ? Scheme::per_channel(8) : Scheme::per_group(4, 32, false);
    const auto w = test::random_packed(bits, N, K, s, rng);
    const MatrixXfR x = test::random_x(M, K, rng);
    for (auto act : {ActivationQuant::int8, ActivationQuant::float32}) {
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
      CHECK(same_bits(y1, y2));
      CHECK(same_bits(y1, y3));
      CHECK(same_bits(y1, test::reference_linear(x, w, opt)));
    }
  }
  // Small problems stay on one thread.
  omp_set_num_threads(2);
  CHECK(detail::linear_threads(1, 64, 64) == 1);
#else
  SUCCEED("built without OpenMP: one thread only");
#endif
}
