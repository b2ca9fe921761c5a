// cpu.hpp: which instruction sets this CPU has, which one the kernels use, and how to force one.
#pragma once

#include <lowbit/core/error.hpp>

#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define LOWBIT_X86 1
#elif defined(__aarch64__)
#include <sys/auxv.h>
#define LOWBIT_AARCH64 1
#endif

namespace lowbit::cpu {

/// Kernel paths, like ruy's Path: each is a complete implementation of every kernel.
/// `scalar` is portable C++; the others need the named instructions.
enum class Isa { scalar, avx2, avx512_vnni, neon, neon_dotprod };

inline std::string_view to_string(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512_vnni: return "avx512_vnni";
    case Isa::neon: return "neon";
    case Isa::neon_dotprod: return "neon_dotprod";
  }
  return "unknown";
}

/// Parses "scalar", "avx2", "avx512_vnni", "neon" or "neon_dotprod"; throws lowbit::Error else.
inline Isa parse_isa(std::string_view name) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni, Isa::neon, Isa::neon_dotprod})
    if (name == to_string(isa)) return isa;
  detail::fail("isa: expected scalar|avx2|avx512_vnni|neon|neon_dotprod, got '{}'", name);
}

namespace detail {

#if defined(LOWBIT_X86)
// XCR0 says which register state the OS saves; an ISA is usable only if the OS saves its registers.
__attribute__((target("xsave"))) inline unsigned long long xcr0() { return __builtin_ia32_xgetbv(0); }
#endif

/// Bit i set when Isa(i) can run here. Computed once (cpuid/XCR0 on x86, getauxval on ARM).
inline unsigned detect() {
  unsigned mask = 1u << int(Isa::scalar);
#if defined(LOWBIT_X86)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return mask;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), f16c = c & (1u << 29);
  if (!osxsave) return mask;
  const unsigned long long x = xcr0();
  const bool ymm = (x & 0x6) == 0x6, zmm = (x & 0xE6) == 0xE6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return mask;
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31), vnni = c & (1u << 11);
  if (ymm && avx2 && fma && f16c) mask |= 1u << int(Isa::avx2);
  if (zmm && avx512f && avx512bw && avx512vl && vnni && avx2 && fma && f16c)
    mask |= 1u << int(Isa::avx512_vnni);
#elif defined(LOWBIT_AARCH64)
  mask |= 1u << int(Isa::neon);  // Advanced SIMD is part of every AArch64 CPU
  if (getauxval(AT_HWCAP) & (1ul << 20)) mask |= 1u << int(Isa::neon_dotprod);  // HWCAP_ASIMDDP
#endif
  return mask;
}

inline unsigned supported_mask() {
  static const unsigned mask = detect();
  return mask;
}

/// -1: no override; else the forced Isa (set by ScopedIsa).
inline std::atomic<int>& forced() {
  static std::atomic<int> value{-1};
  return value;
}

}  // namespace detail

/// True when this CPU (and OS) can run `isa`.
inline bool is_supported(Isa isa) { return (detail::supported_mask() >> int(isa)) & 1u; }

/// Every Isa this CPU can run, scalar first, fastest last.
inline std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::scalar, Isa::neon, Isa::neon_dotprod, Isa::avx2, Isa::avx512_vnni})
    if (is_supported(isa)) out.push_back(isa);
  return out;
}

/// The fastest Isa this CPU can run.
inline Isa best_isa() { return supported_isas().back(); }

/// Throws lowbit::Error unless this CPU can run `isa`.
inline void require_supported(Isa isa) {
  lowbit::detail::require(is_supported(isa), "isa: {} is not supported by this CPU (supported: {})",
                          to_string(isa), [] {
                            std::string s;
                            for (Isa i : supported_isas()) s += (s.empty() ? "" : " ") + std::string(to_string(i));
                            return s;
                          }());
}

/// The Isa the kernels use now: a ScopedIsa override, else the environment variable LOWBIT_ISA
/// (scalar|avx2|avx512_vnni|neon|neon_dotprod), else best_isa(). Throws lowbit::Error when
/// LOWBIT_ISA names an unknown ISA or one this CPU lacks.
inline Isa active_isa() {
  const int f = detail::forced().load(std::memory_order_relaxed);
  if (f >= 0) return Isa(f);
  if (const char* env = std::getenv("LOWBIT_ISA"); env != nullptr && *env != '\0') {
    const Isa isa = parse_isa(env);
    require_supported(isa);
    return isa;
  }
  return best_isa();
}

/// Forces an Isa for its lifetime (tests, benchmarks), restoring the previous choice after;
/// throws lowbit::Error when this CPU cannot run it. Process-wide: do not race two of them.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : previous_(detail::forced().load()) {
    require_supported(isa);
    detail::forced().store(int(isa));
  }
  ~ScopedIsa() { detail::forced().store(previous_); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  int previous_;
};

}  // namespace lowbit::cpu
