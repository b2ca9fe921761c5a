// amx_tiles.hpp: the AMX tile operations the kernels use, twice: the instructions and an exact scalar emulation.
#pragma once

#include <lowbit/core/types.hpp>
#include <lowbit/gemm/cpu.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace lowbit::kernels::amx_tiles {

/// Palette 1 of AMX: 8 tile registers of up to 16 rows x 64 bytes.
inline constexpr int tile_count = 8, max_rows = 16, max_colsb = 64;

/// The 64-byte operand of LDTILECFG / STTILECFG, byte for byte as the ISA defines it (little-endian
/// fields): byte 0 palette, byte 1 start_row, bytes 2..15 reserved, bytes 16 + 2t (uint16) the
/// bytes per row of tile t (t < 8), bytes 32..47 reserved, byte 48 + t the rows of tile t, bytes
/// 56..63 reserved. Reserved bytes must be zero, and an unused tile has rows = colsb = 0.
struct alignas(64) Config {
  uint8_t bytes[64] = {};

  int palette() const noexcept { return bytes[0]; }
  int start_row() const noexcept { return bytes[1]; }
  int rows(int t) const noexcept { return bytes[48 + t]; }
  int colsb(int t) const noexcept { return bytes[16 + 2 * t] | (bytes[17 + 2 * t] << 8); }
  /// Palette 1 with tile t of r rows x cb bytes (r <= 16, cb <= 64).
  Config& set(int t, int r, int cb) noexcept {
    bytes[0] = 1;
    bytes[16 + 2 * t] = uint8_t(cb & 0xFF);
    bytes[17 + 2 * t] = uint8_t(cb >> 8);
    bytes[48 + t] = uint8_t(r);
    return *this;
  }
};
static_assert(sizeof(Config) == 64, "LDTILECFG reads exactly 64 bytes");

/// Why LDTILECFG would raise #GP for `c` (nullptr when it loads): palette other than 0 or 1,
/// reserved bytes set, more than 64 bytes per row or 16 rows, or a tile with exactly one of rows
/// and colsb zero. Palette 0 always loads (it is the INIT state).
inline const char* config_fault(const Config& c) noexcept {
  const uint8_t* b = c.bytes;
  if (b[0] == 0) return nullptr;
  if (b[0] != 1) return "palette is not 0 or 1";
  for (int i = 2; i < 16; ++i)
    if (b[i]) return "reserved bytes 2..15 are not zero";
  for (int i = 32; i < 48; ++i)
    if (b[i]) return "bytes 32..47 (colsb of tiles 8..15) are not zero";
  for (int i = 56; i < 64; ++i)
    if (b[i]) return "bytes 56..63 (rows of tiles 8..15) are not zero";
  for (int t = 0; t < tile_count; ++t) {
    if (c.colsb(t) > max_colsb) return "a tile has more than 64 bytes per row";
    if (c.rows(t) > max_rows) return "a tile has more than 16 rows";
    if ((c.rows(t) == 0) != (c.colsb(t) == 0)) return "a tile has exactly one of rows and colsb zero";
  }
  return nullptr;
}

/// The tile operations as plain C++ with the ISA's exact semantics (Intel SDM pseudocode):
/// LDTILECFG validates and zeroes every tile; TILELOADD reads rows x colsb bytes at base + row *
/// stride and zeroes the rest of the register; TILESTORED writes exactly rows x colsb bytes; the
/// dot products sum four byte products into int32 with wrap-around (no saturation) and zero the
/// parts of the destination outside its rows and colsb. What the hardware reports as #GP or #UD
/// is a fault here too: a message on stderr and std::abort(), as a real fault ends the process.
/// The `*_fault` queries say why an operation would fault, for tests.
class Emulated {
 public:
  Emulated() noexcept { release(); }

  /// LDTILECFG: reads all 64 bytes of `c`.
  void load_config(const Config& c) noexcept {
    Config tmp;
    std::memcpy(tmp.bytes, c.bytes, 64);
    if (const char* why = config_fault(tmp)) fault("LDTILECFG", why);
    if (tmp.palette() == 0) return release();
    cfg_ = tmp;
    configured_ = true;
    std::memset(data_, 0, sizeof(data_));
  }
  /// STTILECFG: the loaded configuration, or 64 zero bytes when none is loaded.
  void store_config(Config& c) const noexcept { std::memcpy(c.bytes, cfg_.bytes, 64); }
  /// TILERELEASE: back to the INIT state (no configuration, tiles zero).
  void release() noexcept {
    cfg_ = Config{};
    configured_ = false;
    std::memset(data_, 0, sizeof(data_));
  }
  bool configured() const noexcept { return configured_; }
  /// Byte i of row r of tile t (what the register holds; for tests).
  uint8_t byte(int t, int r, int i) const noexcept { return data_[t][r][i]; }

  /// Why an operation on tile t would raise #UD (nullptr when it runs).
  const char* tile_fault(int t) const noexcept {
    if (!configured_) return "tiles are not configured";
    if (t < 0 || t >= tile_count || cfg_.rows(t) == 0) return "the tile is not configured";
    if (cfg_.start_row() >= cfg_.rows(t)) return "start_row is not below the tile's rows";
    return nullptr;
  }
  /// Why TDPB*D c, a, b would raise #UD: registers not distinct, a tile not configured, colsb not
  /// a multiple of 4, or shapes that do not chain (C m x n, A m x 4k bytes, B k x n dwords).
  const char* dot_fault(int c, int a, int b) const noexcept {
    if (c == a || c == b || a == b) return "the three tiles are not distinct";
    for (int t : {c, a, b})
      if (const char* why = tile_fault(t)) return why;
    for (int t : {c, a, b})
      if (cfg_.colsb(t) % 4) return "a tile's colsb is not a multiple of 4";
    if (cfg_.colsb(c) != cfg_.colsb(b)) return "colsb of the destination and of B differ";
    if (cfg_.rows(c) != cfg_.rows(a)) return "rows of the destination and of A differ";
    if (cfg_.colsb(a) / 4 != cfg_.rows(b)) return "A's colsb / 4 is not B's rows";
    return nullptr;
  }

  /// TILEZERO.
  template <int T>
  void zero() noexcept {
    if (!configured_ || cfg_.rows(T) == 0) fault("TILEZERO", "the tile is not configured");
    std::memset(data_[T], 0, sizeof(data_[T]));
  }
  /// TILELOADD tmm, [base + stride * row]: reads exactly rows x colsb bytes.
  template <int T>
  void load(const void* base, Index stride) noexcept {
    if (const char* why = tile_fault(T)) fault("TILELOADD", why);
    const int rows = cfg_.rows(T), cb = cfg_.colsb(T);
    const auto* p = static_cast<const uint8_t*>(base);
    std::memset(data_[T], 0, sizeof(data_[T]));
    for (int r = cfg_.start_row(); r < rows; ++r) std::memcpy(data_[T][r], p + r * stride, size_t(cb));
    cfg_.bytes[1] = 0;
  }
  /// TILESTORED [base + stride * row], tmm: writes exactly rows x colsb bytes.
  template <int T>
  void store(void* base, Index stride) noexcept {
    if (const char* why = tile_fault(T)) fault("TILESTORED", why);
    const int rows = cfg_.rows(T), cb = cfg_.colsb(T);
    auto* p = static_cast<uint8_t*>(base);
    for (int r = cfg_.start_row(); r < rows; ++r) std::memcpy(p + r * stride, data_[T][r], size_t(cb));
    cfg_.bytes[1] = 0;
  }

  /// TDPBSSD C, A, B: C[m][n] += sum_j A[m][4i + j] * B[i][4n + j], A and B signed bytes.
  template <int C, int A, int B>
  void dpbssd() noexcept { dot<C, A, B, true, true>("TDPBSSD"); }
  /// TDPBSUD: A signed, B unsigned.
  template <int C, int A, int B>
  void dpbsud() noexcept { dot<C, A, B, true, false>("TDPBSUD"); }
  /// TDPBUSD: A unsigned, B signed.
  template <int C, int A, int B>
  void dpbusd() noexcept { dot<C, A, B, false, true>("TDPBUSD"); }
  /// TDPBUUD: A and B unsigned.
  template <int C, int A, int B>
  void dpbuud() noexcept { dot<C, A, B, false, false>("TDPBUUD"); }

 private:
  [[noreturn]] static void fault(const char* op, const char* why) noexcept {
    std::fprintf(stderr, "lowbit: emulated AMX fault in %s: %s\n", op, why);
    std::abort();
  }
  static int32_t byte_value(uint8_t b, bool is_signed) noexcept { return is_signed ? int32_t(int8_t(b)) : int32_t(b); }
  static uint32_t get32(const uint8_t* p) noexcept {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  }
  static void put32(uint8_t* p, uint32_t v) noexcept {
    for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
  }

  template <int C, int A, int B, bool SA, bool SB>
  void dot(const char* op) noexcept {
    if (const char* why = dot_fault(C, A, B)) fault(op, why);
    const int M = cfg_.rows(C), N = cfg_.colsb(C) / 4, K = cfg_.colsb(A) / 4;
    for (int m = 0; m < M; ++m) {
      uint8_t row[64] = {};
      for (int n = 0; n < N; ++n) {
        uint32_t acc = get32(data_[C][m] + 4 * n);
        for (int k = 0; k < K; ++k) {
          int32_t p = 0;  // four products, at most 4 * 255 * 255 in magnitude: exact in int32
          for (int j = 0; j < 4; ++j)
            p += byte_value(data_[A][m][4 * k + j], SA) * byte_value(data_[B][k][4 * n + j], SB);
          acc += uint32_t(p);  // the ISA's int32 accumulation wraps around
        }
        put32(row + 4 * n, acc);
      }
      std::memcpy(data_[C][m], row, 64);  // write_row_and_zero: bytes past colsb become 0
    }
    for (int m = M; m < max_rows; ++m) std::memset(data_[C][m], 0, 64);  // zero_upper_rows
    cfg_.bytes[1] = 0;
  }

  Config cfg_;
  bool configured_ = false;
  alignas(64) uint8_t data_[tile_count][max_rows][max_colsb];
};

}  // namespace lowbit::kernels::amx_tiles

#if defined(LOWBIT_X86)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("amx-tile,amx-int8"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-int8")
#endif

namespace lowbit::kernels::amx_tiles {

/// The same operations on the real tile registers, as inline assembly rather than the compilers'
/// intrinsics: GCC 12's _tile_loadconfig declares an 8-byte memory operand (so the stores that
/// build the other 56 bytes of a configuration may be dropped as dead) and its _tile_loadd reads
/// memory the compiler is not told about. Here LDTILECFG takes the whole 64-byte Config as its
/// operand, and every load and store clobbers memory, so the compiler orders C++ memory accesses
/// around them. Only for CPUs where cpu::is_supported(cpu::Isa::amx).
class Hardware {
 public:
  void load_config(const Config& c) noexcept { __asm__ volatile("ldtilecfg %0" : : "m"(c)); }
  void store_config(Config& c) const noexcept { __asm__ volatile("sttilecfg %0" : "=m"(c)); }
  void release() noexcept { __asm__ volatile("tilerelease" : : : "memory"); }

  template <int T>
  void zero() noexcept {
    __asm__ volatile("tilezero %%tmm%c0" : : "i"(T));
  }
  template <int T>
  void load(const void* base, Index stride) noexcept {
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2" : : "r"(base), "r"(long(stride)), "i"(T) : "memory");
  }
  template <int T>
  void store(void* base, Index stride) noexcept {
    __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)" : : "r"(base), "r"(long(stride)), "i"(T) : "memory");
  }
  template <int C, int A, int B>
  void dpbssd() noexcept {
    __asm__ volatile("tdpbssd %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
  }
  template <int C, int A, int B>
  void dpbsud() noexcept {
    __asm__ volatile("tdpbsud %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
  }
  template <int C, int A, int B>
  void dpbusd() noexcept {
    __asm__ volatile("tdpbusd %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
  }
  template <int C, int A, int B>
  void dpbuud() noexcept {
    __asm__ volatile("tdpbuud %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
  }
};

}  // namespace lowbit::kernels::amx_tiles

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // LOWBIT_X86
