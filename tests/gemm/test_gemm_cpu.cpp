// test_gemm_cpu.cpp: ISA detection, the scoped override and LOWBIT_ISA.
#include <lowbit/gemm/cpu.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

using namespace lowbit;
using cpu::Isa;

namespace {

#if defined(__x86_64__)
/// The flags Linux reports for the first CPU in /proc/cpuinfo (empty elsewhere): an independent
/// view of what the CPU and the kernel support.
std::string cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) return line + " ";
  return "";
}

bool cpuinfo_has(const std::string& flag) { return cpuinfo_flags().find(" " + flag + " ") != std::string::npos; }
#endif

}  // namespace

TEST_CASE("supported_isas starts with scalar and ends with the best", "[gemm][cpu]") {
  const auto isas = cpu::supported_isas();
  REQUIRE(!isas.empty());
  CHECK(isas.front() == Isa::scalar);
  CHECK(isas.back() == cpu::best_isa());
  for (Isa i : isas) CHECK(cpu::is_supported(i));
#if defined(__x86_64__)
  // The kernels' guard: an x86 CPU reporting the features must get the path.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) CHECK(cpu::is_supported(Isa::avx2));
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
    CHECK(cpu::is_supported(Isa::avx512_vnni));
  CHECK(!cpu::is_supported(Isa::neon));
  CHECK(!cpu::is_supported(Isa::neon_dotprod));
  // Linux lists amx_tile/amx_int8 only when it supports the tile state, and then grants it.
  if (cpuinfo_has("amx_tile") && cpuinfo_has("amx_int8") && cpu::is_supported(Isa::avx512_vnni))
    CHECK(cpu::is_supported(Isa::amx));
  if (!cpuinfo_flags().empty() && !cpuinfo_has("amx_int8")) CHECK(!cpu::is_supported(Isa::amx));
#elif defined(__aarch64__)
  CHECK(cpu::is_supported(Isa::neon));
  CHECK(!cpu::is_supported(Isa::avx2));
  CHECK(!cpu::is_supported(Isa::amx));
#endif
  // amx tiles the prefill only: everything else runs on avx512_vnni, which it therefore implies.
  if (cpu::is_supported(Isa::amx)) CHECK(cpu::is_supported(Isa::avx512_vnni));
}

TEST_CASE("ScopedIsa forces an Isa and restores the previous one", "[gemm][cpu]") {
  unsetenv("LOWBIT_ISA");
  const Isa before = cpu::active_isa();
  CHECK(before == cpu::best_isa());
  for (Isa i : cpu::supported_isas()) {
    cpu::ScopedIsa forced(i);
    CHECK(cpu::active_isa() == i);
    {
      cpu::ScopedIsa inner(Isa::scalar);
      CHECK(cpu::active_isa() == Isa::scalar);
    }
    CHECK(cpu::active_isa() == i);
  }
  CHECK(cpu::active_isa() == before);
}

TEST_CASE("forcing an Isa this CPU lacks throws", "[gemm][cpu]") {
  for (Isa i : {Isa::avx2, Isa::avx512_vnni, Isa::neon, Isa::neon_dotprod, Isa::amx})
    if (!cpu::is_supported(i)) {
      CHECK_THROWS_AS(cpu::ScopedIsa(i), Error);
      CHECK_THROWS_WITH(cpu::require_supported(i), Catch::Contains("not supported"));
    }
  CHECK_THROWS_AS(cpu::parse_isa("sse9"), Error);
  CHECK(cpu::parse_isa("avx512_vnni") == Isa::avx512_vnni);
  CHECK(cpu::parse_isa("amx") == Isa::amx);
  CHECK_THROWS_AS(cpu::parse_isa("AMX"), Error);
  for (Isa i : {Isa::scalar, Isa::avx2, Isa::avx512_vnni, Isa::neon, Isa::neon_dotprod, Isa::amx})
    CHECK(cpu::parse_isa(cpu::to_string(i)) == i);
}

TEST_CASE("LOWBIT_ISA selects the Isa, and bad values throw", "[gemm][cpu]") {
  setenv("LOWBIT_ISA", "scalar", 1);
  CHECK(cpu::active_isa() == Isa::scalar);
  {
    cpu::ScopedIsa forced(cpu::best_isa());  // the override wins over the environment
    CHECK(cpu::active_isa() == cpu::best_isa());
  }
  setenv("LOWBIT_ISA", "bogus", 1);
  CHECK_THROWS_AS(cpu::active_isa(), Error);
  for (Isa i : {Isa::avx2, Isa::avx512_vnni, Isa::neon, Isa::neon_dotprod, Isa::amx})
    if (!cpu::is_supported(i)) {
      setenv("LOWBIT_ISA", std::string(cpu::to_string(i)).c_str(), 1);
      CHECK_THROWS_AS(cpu::active_isa(), Error);
    }
  unsetenv("LOWBIT_ISA");
  CHECK(cpu::active_isa() == cpu::best_isa());
}
