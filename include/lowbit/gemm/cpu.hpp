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
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#elif defined(__aarch64__)
#include <sys/auxv.h>
#define LOWBIT_AARCH64 1
#endif

/// Forces inlining of the small helpers the kernels' register tiles are built from.
#define LOWBIT_ALWAYS_INLINE __attribute__((always_inline))

namespace lowbit::cpu {

/// Kernel paths, like ruy's Path: each is a complete implementation of every kernel.
/// `scalar` is portable C++; the others need the named instructions. `amx` tiles the prefill
/// (M >= 16) of integer activations with AMX-INT8 and runs everything else as avx512_vnni.
enum class Isa { scalar, avx2, avx512_vnni, neon, neon_dotprod, amx };

inline std::string_view to_string(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512_vnni: return "avx512_vnni";
    case Isa::neon: return "neon";
    case Isa::neon_dotprod: return "neon_dotprod";
    case Isa::amx: return "amx";
  }
  return "unknown";
}

/// Parses "scalar", "avx2", "avx512_vnni", "neon", "neon_dotprod" or "amx"; throws lowbit::Error else.
inline Isa parse_isa(std::string_view name) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni, Isa::neon, Isa::neon_dotprod, Isa::amx})
    if (name == to_string(isa)) return isa;
  detail::fail("isa: expected scalar|avx2|avx512_vnni|neon|neon_dotprod|amx, got '{}'", name);
}

namespace detail {

#if defined(LOWBIT_X86)
// XCR0 says which register state the OS saves; an ISA is usable only if the OS saves its registers.
__attribute__((target("xsave"))) inline unsigned long long xcr0() { return __builtin_ia32_xgetbv(0); }

// ---- AMX (Isa::amx) ----
/// AMX-INT8 with palette 1 (8 tiles of 16 rows x 64 bytes): CPUID.7.0:EDX bits 24 (AMX-TILE) and
/// 25 (AMX-INT8), the palette's limits in CPUID.1DH.1, XCR0 bits 17 and 18 (the OS saves XTILECFG
/// and XTILEDATA), and Linux's permission to use the tile data, requested here with
/// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) and read back with ARCH_GET_XCOMP_PERM.
/// A refusal (or another OS) means unsupported. Granting is process-wide and detect() runs once
/// per process. (Once granted, Linux also wants alternate signal stacks, sigaltstack, large enough
/// for the tile state in this process.)
inline bool amx_usable(unsigned edx7, unsigned long long xcr0_bits) {
  if (!(edx7 & (1u << 24)) || !(edx7 & (1u << 25))) return false;
  if ((xcr0_bits & (3ull << 17)) != (3ull << 17)) return false;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(0x1D, 0, &a, &b, &c, &d) || a < 1) return false;  // max palette
  if (!__get_cpuid_count(0x1D, 1, &a, &b, &c, &d)) return false;
  if ((b & 0xFFFF) < 64 || (b >> 16) < 8 || (c & 0xFFFF) < 16) return false;  // bytes/row, names, rows
#if defined(__linux__) && defined(__x86_64__)
  constexpr long arch_get_xcomp_perm = 0x1022, arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
  if (syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) != 0) return false;
  unsigned long long granted = 0;
  if (syscall(SYS_arch_prctl, arch_get_xcomp_perm, &granted) != 0) return false;
  return (granted >> xfeature_xtiledata) & 1u;
#else
  return false;
#endif
}
// ---- end AMX ----
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
  if (((mask >> int(Isa::avx512_vnni)) & 1u) && amx_usable(d, x))  // amx runs untiled work on VNNI
    mask |= 1u << int(Isa::amx);
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
  for (Isa isa : {Isa::scalar, Isa::neon, Isa::neon_dotprod, Isa::avx2, Isa::avx512_vnni, Isa::amx})
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
/// (scalar|avx2|avx512_vnni|neon|neon_dotprod|amx), else best_isa(). Throws lowbit::Error when
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
