// test_gemm_amx.cpp: the emulated AMX tile operations against plain loops, and the AMX kernels
// (through the emulation on every machine, on the real tiles where the CPU has them) against the
// scalar reference, bit for bit.
#include "gemm_test_util.hpp"
#include "../support.hpp"

#include <lowbit/gemm/kernels_amx.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
namespace tiles = lowbit::kernels::amx_tiles;
using tiles::Config;
using tiles::Emulated;

namespace {

/// A configuration built byte by byte from the ISA's table, independently of Config::set.
Config config_bytes(const std::vector<std::pair<int, int>>& shapes) {  // (rows, colsb) per tile
  Config c;
  c.bytes[0] = 1;
  for (size_t t = 0; t < shapes.size(); ++t) {
    c.bytes[16 + 2 * t] = uint8_t(shapes[t].second & 0xFF);
    c.bytes[17 + 2 * t] = uint8_t(shapes[t].second >> 8);
    c.bytes[48 + t] = uint8_t(shapes[t].first);
  }
  return c;
}

/// Builds the kernel's configuration in a frame of its own and loads it from there, as the kernel
/// does: every byte of the 64 must reach LDTILECFG.
template <class T>
__attribute__((noinline)) void load_fresh_config(T& t, Index step_rows) {
  kernels::amx_emu::TilePlan p;
  p.step_rows = step_rows;
  t.load_config(kernels::amx_emu::tile_config(p));
}

std::vector<uint8_t> random_bytes(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(d(rng));
  return v;
}

int32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(p[i]) << (8 * i);
  return int32_t(v);
}

using lowbit::test::same_bits;

}  // namespace

TEST_CASE("config_fault accepts what LDTILECFG loads and names what raises #GP", "[gemm][amx]") {
  CHECK(tiles::config_fault(Config{}) == nullptr);  // palette 0: the INIT state
  CHECK(tiles::config_fault(config_bytes({{16, 64}, {1, 4}, {16, 12}})) == nullptr);
  auto bad = [](auto edit) {
    Config c = config_bytes({{16, 64}, {16, 64}});
    edit(c);
    return tiles::config_fault(c);
  };
  CHECK(bad([](Config& c) { c.bytes[0] = 2; }) != nullptr);
  CHECK(bad([](Config& c) { c.bytes[9] = 1; }) != nullptr);
  CHECK(bad([](Config& c) { c.bytes[32] = 4; }) != nullptr);   // colsb of tile 8
  CHECK(bad([](Config& c) { c.bytes[60] = 1; }) != nullptr);   // rows of tile 12
  CHECK(bad([](Config& c) { c.bytes[16] = 65; }) != nullptr);  // 65 bytes per row
  CHECK(bad([](Config& c) { c.bytes[17] = 1; }) != nullptr);   // 256 + 64 bytes per row
  CHECK(bad([](Config& c) { c.bytes[48] = 17; }) != nullptr);  // 17 rows
  CHECK(bad([](Config& c) { c.bytes[50] = 3; }) != nullptr);   // rows without colsb
  CHECK(bad([](Config& c) { c.bytes[20] = 8; }) != nullptr);   // colsb without rows
  CHECK(bad([](Config& c) { c.bytes[1] = 3; }) == nullptr);    // start_row is not validated here
}

TEST_CASE("emulated LDTILECFG reads all 64 bytes and STTILECFG gives them back", "[gemm][amx]") {
  Emulated t;
  Config out;
  t.store_config(out);
  CHECK(std::memcmp(out.bytes, Config{}.bytes, 64) == 0);  // not configured: 64 zero bytes
  CHECK(!t.configured());
  for (Index kr : {16, 8, 15, 4}) {
    load_fresh_config(t, kr);
    REQUIRE(t.configured());
    t.store_config(out);
    const int r = int(kr), cb = int(4 * kr);
    const Config want = config_bytes({{16, 64}, {16, 64}, {16, 64}, {16, 64}, {16, cb}, {16, cb}, {r, 64}, {r, 64}});
    INFO("step rows " << kr);
    CHECK(std::memcmp(out.bytes, want.bytes, 64) == 0);
  }
  // Loading palette 0 and releasing both return to the INIT state.
  t.load_config(Config{});
  CHECK(!t.configured());
  load_fresh_config(t, 16);
  t.release();
  t.store_config(out);
  CHECK(!t.configured());
  CHECK(std::memcmp(out.bytes, Config{}.bytes, 64) == 0);
}

TEST_CASE("emulated tile loads and stores move exactly rows x colsb bytes with a stride", "[gemm][amx]") {
  std::mt19937 rng(41);
  Emulated t;
  t.load_config(config_bytes({{16, 64}, {5, 12}, {16, 64}}));
  const auto mem = random_bytes(2000, rng);
  t.load<0>(mem.data(), 64);
  t.load<1>(mem.data() + 3, 40);
  for (int r = 0; r < 16; ++r)
    for (int i = 0; i < 64; ++i) {
      INFO("row " << r << " byte " << i);
      REQUIRE(t.byte(0, r, i) == mem[size_t(r * 64 + i)]);
      REQUIRE(t.byte(1, r, i) == (r < 5 && i < 12 ? mem[size_t(3 + r * 40 + i)] : 0));
    }
  // A load into a tile that held data zeroes what lies outside rows x colsb.
  Emulated u;
  u.load_config(config_bytes({{3, 8}}));
  u.load<0>(mem.data(), 8);
  CHECK(u.byte(0, 2, 7) == mem[23]);
  CHECK(u.byte(0, 3, 0) == 0);
  CHECK(u.byte(0, 0, 8) == 0);

  std::vector<uint8_t> out(1000, 0xEE);
  t.store<1>(out.data() + 7, 30);
  for (size_t i = 0; i < out.size(); ++i) {
    const Index off = Index(i) - 7, r = off / 30, c = off % 30;
    const bool inside = off >= 0 && r < 5 && c < 12;
    INFO("byte " << i);
    REQUIRE(out[i] == (inside ? mem[size_t(3 + r * 40 + c)] : 0xEE));
  }
  t.zero<0>();
  for (int r = 0; r < 16; ++r)
    for (int i = 0; i < 64; ++i) REQUIRE(t.byte(0, r, i) == 0);
  // LDTILECFG zeroes every tile.
  t.load<2>(mem.data(), 64);
  t.load_config(config_bytes({{16, 64}, {5, 12}, {16, 64}}));
  for (int r = 0; r < 16; ++r)
    for (int i = 0; i < 64; ++i) REQUIRE(t.byte(2, r, i) == 0);
}

TEST_CASE("emulated TDPBSSD/TDPBSUD/TDPBUSD/TDPBUUD equal plain loops, wrapping in int32", "[gemm][amx]") {
  std::mt19937 rng(42);
  struct Shape { int m, n, k; };  // C m x n dwords, A m x 4k bytes, B k x 4n bytes
  for (Shape s : {Shape{16, 16, 16}, Shape{7, 5, 3}, Shape{1, 16, 1}, Shape{16, 1, 9}})
    for (int variant = 0; variant < 4; ++variant)
      for (bool wrap : {false, true}) {
        const bool sa = variant == 0 || variant == 1, sb = variant == 0 || variant == 2;
        Emulated t;
        t.load_config(config_bytes({{s.m, 4 * s.n}, {s.m, 4 * s.k}, {s.k, 4 * s.n}, {16, 64}}));
        const auto cmem = random_bytes(16 * 64, rng), amem = random_bytes(16 * 64, rng),
                   bmem = random_bytes(16 * 64, rng);
        std::vector<uint8_t> c0 = cmem;
        if (wrap)  // accumulators near the int32 limits: the sums must wrap around
          for (int i = 0; i < 16 * 16; ++i) {
            const uint32_t v = i % 2 ? 0x7FFFFFF0u : 0x80000010u;
            for (int j = 0; j < 4; ++j) c0[size_t(4 * i + j)] = uint8_t(v >> (8 * j));
          }
        t.load<0>(c0.data(), 64);
        t.load<1>(amem.data(), 64);
        t.load<2>(bmem.data(), 64);
        t.load<3>(bmem.data(), 64);  // filled: the destination's rows past m must come out zero
        switch (variant) {
          case 0: t.dpbssd<0, 1, 2>(); break;
          case 1: t.dpbsud<0, 1, 2>(); break;
          case 2: t.dpbusd<0, 1, 2>(); break;
          default: t.dpbuud<0, 1, 2>(); break;
        }
        auto val = [](uint8_t b, bool sgn) { return sgn ? int64_t(int8_t(b)) : int64_t(b); };
        for (int m = 0; m < 16; ++m)
          for (int n = 0; n < 16; ++n) {
            int64_t want = 0;
            if (m < s.m && n < s.n) {
              want = get32(&c0[size_t(m * 64 + 4 * n)]);
              for (int k = 0; k < s.k; ++k)
                for (int j = 0; j < 4; ++j)
                  want += val(amem[size_t(m * 64 + 4 * k + j)], sa) * val(bmem[size_t(k * 64 + 4 * n + j)], sb);
            }
            uint8_t got[4];
            for (int j = 0; j < 4; ++j) got[j] = t.byte(0, m, 4 * n + j);
            INFO("variant " << variant << " shape " << s.m << "x" << s.n << "x" << s.k << " at " << m << "," << n);
            REQUIRE(get32(got) == int32_t(uint32_t(uint64_t(want))));
          }
      }
}

TEST_CASE("emulated dot products refuse the shapes and registers the ISA refuses", "[gemm][amx]") {
  Emulated t;
  CHECK(t.dot_fault(0, 1, 2) != nullptr);  // not configured
  t.load_config(config_bytes({{16, 64}, {16, 32}, {8, 64}, {16, 64}, {8, 32}, {15, 32}, {16, 62}}));
  CHECK(t.dot_fault(0, 1, 2) == nullptr);
  CHECK(t.dot_fault(0, 0, 2) != nullptr);  // registers not distinct
  CHECK(t.dot_fault(0, 1, 1) != nullptr);
  CHECK(t.dot_fault(0, 3, 2) != nullptr);  // A is 16 x 64: 16 dwords, B has 8 rows
  CHECK(t.dot_fault(0, 1, 4) != nullptr);  // B 8 x 32: n = 8, C n = 16
  CHECK(t.dot_fault(0, 5, 2) != nullptr);  // A 15 rows, C 16 rows
  CHECK(t.dot_fault(0, 6, 3) != nullptr);  // colsb 62 is not a multiple of 4
  CHECK(t.dot_fault(0, 1, 7) != nullptr);  // tile 7 is not configured
  CHECK(t.tile_fault(7) != nullptr);
  CHECK(t.tile_fault(2) == nullptr);
}

TEST_CASE("the tile plan covers K in whole steps inside groups", "[gemm][amx]") {
  std::mt19937 rng(43);
  struct Want { int bits; Index K, gs, step, rows, block; bool whole; };
  for (Want c : {Want{8, 1025, 0, 16, 272, 128, false}, Want{8, 64, 0, 16, 16, 128, true},
                 Want{4, 100, 32, 8, 32, 128, true}, Want{8, 4096, 128, 16, 1024, 128, true},
                 Want{4, 4096, 32, 8, 1024, 128, true}, Want{8, 36 * 3, 36, 9, 27, 126, true},
                 Want{4, 480 + 60, 240, 15, 135, 120, true}, Want{8, 2100, 1024, 16, 528, 128, false},
                 Want{4, 24 * 5, 24, 6, 30, 126, true}, Want{4, 80, 8, 2, 20, 128, true}}) {
    const Scheme s = c.gs ? Scheme::per_group(c.bits, int(c.gs)) : Scheme::per_channel(c.bits);
    const auto w = test::random_packed(c.bits, 3, c.K, s, rng);
    const auto p = kernels::amx_emu::tile_plan(w);
    INFO("bits " << c.bits << " K " << c.K << " gs " << c.gs);
    CHECK(p.step_rows == c.step);
    CHECK(p.rows == c.rows);
    CHECK(p.block_rows == c.block);
    CHECK(p.whole_groups == c.whole);
    CHECK(p.rows * 4 >= c.K);
    CHECK(p.rows % p.step_rows == 0);
  }
}

namespace {

struct KCase {
  int bits;
  Scheme scheme;
  ActivationQuant act;
};

std::vector<KCase> kernel_cases() {
  std::vector<KCase> out;
  for (bool sym : {true, false}) {
    for (auto act : {ActivationQuant::int8, ActivationQuant::uint8}) {
      out.push_back({8, Scheme::per_channel(8, sym), act});
      out.push_back({4, Scheme::per_channel(4, sym), act});
    }
    for (int gs : {32, 64, 128})
      for (auto act : {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::int8_per_group}) {
        out.push_back({4, Scheme::per_group(4, gs, sym), act});
        out.push_back({8, Scheme::per_group(8, gs, sym), act});
      }
    out.push_back({3, Scheme::per_group(3, 32, sym), ActivationQuant::int8});
    out.push_back({2, Scheme::per_channel(2, sym), ActivationQuant::uint8});
    out.push_back({6, Scheme::per_group(6, 64, sym), ActivationQuant::int8_per_group});
    out.push_back({8, Scheme::per_group(8, 36, sym), ActivationQuant::uint8});       // 9-row steps
    out.push_back({4, Scheme::per_group(4, 40, sym), ActivationQuant::int8});        // 10-row steps
    out.push_back({4, Scheme::per_group(4, 240, sym), ActivationQuant::int8_per_group});  // 15-row steps
    out.push_back({4, Scheme::per_group(4, 8, sym), ActivationQuant::int8});         // falls back
  }
  return out;
}

/// The emulated AMX kernel's result, epilogue-free.
MatrixXfR emu_linear(const MatrixXfR& x, const PackedWeights& w, ActivationQuant act, Index n0 = 0, Index n1 = -1,
                     MatrixXfR* into = nullptr) {
  detail::QuantizedActivations a;
  kernels::amx_emu::quantize(x.data(), x.rows(), x.cols(), x.cols(), w, act, a);
  MatrixXfR y = into ? *into : MatrixXfR::Zero(x.rows(), w.rows());
  kernels::amx_emu::linear_int(a, w, y.data(), y.cols(), n0, n1 < 0 ? w.rows() : n1);
  return y;
}

MatrixXfR reference(const MatrixXfR& x, const PackedWeights& w, ActivationQuant act) {
  LinearOptions opt;
  opt.activations = act;
  return test::reference_linear(x, w, opt);
}

}  // namespace

TEST_CASE("the emulated AMX kernels equal the reference over awkward shapes and extreme codes", "[gemm][amx]") {
  const std::vector<Index> ms = {16, 17, 31, 32, 33, 63, 64, 65, 128};
  const std::vector<Index> ns = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65};
  const std::vector<Index> ks = {1, 4, 7, 8, 33, 64, 65, 100, 129, 256, 300, 1025};
  std::mt19937 rng(44);
  size_t i = 0, tiled = 0, fell_back = 0;
  for (const KCase& c : kernel_cases())
    for (Index K : ks)
      for (auto codes : {test::Codes::random, test::Codes::extreme}) {
        const Index M = ms[i % ms.size()], N = ns[(i / 2) % ns.size()];
        ++i;
        if (K > 300 && M * N > 600) continue;  // K = 1025 with smaller M x N keeps the run short
        const auto w = test::random_packed(c.bits, N, K, c.scheme, rng, codes);
        const MatrixXfR x = test::random_x(M, K, rng, codes);
        detail::QuantizedActivations a;
        kernels::amx_emu::quantize(x.data(), M, K, K, w, c.act, a);
        (kernels::amx_emu::tiles_apply(a, w) ? tiled : fell_back) += 1;
        INFO("bits " << c.bits << " sym " << c.scheme.symmetric << " gs " << c.scheme.group_size << " act "
                     << to_string(c.act) << " M " << M << " N " << N << " K " << K << " extreme "
                     << (codes == test::Codes::extreme));
        REQUIRE(same_bits(emu_linear(x, w, c.act), reference(x, w, c.act)));
      }
  CHECK(tiled > 500);      // the tiles really ran ...
  CHECK(fell_back > 10);   // ... and group size 8 took the VNNI-style path
}

TEST_CASE("groups larger than a k-block are split across k-blocks exactly", "[gemm][amx]") {
  std::mt19937 rng(50);
  struct Big { int bits; int gs; Index K; };
  // gs 1024: 256-row groups in 128-row pieces; gs 520: 130-row groups, 13-row steps, 117-row
  // pieces that start on odd rows (the nibble widening starts on a high nibble there).
  for (Big c : {Big{8, 1024, 2100}, Big{4, 1024, 2100}, Big{4, 520, 1300}, Big{8, 520, 1300}})
    for (bool sym : {true, false})
      for (auto act : {ActivationQuant::int8, ActivationQuant::uint8, ActivationQuant::int8_per_group}) {
        const Scheme s = Scheme::per_group(c.bits, c.gs, sym);
        const auto w = test::random_packed(c.bits, 20, c.K, s, rng, sym ? test::Codes::random : test::Codes::extreme);
        const auto p = kernels::amx_emu::tile_plan(w);
        REQUIRE(!p.whole_groups);
        const MatrixXfR x = test::random_x(33, c.K, rng);
        INFO("bits " << c.bits << " gs " << c.gs << " sym " << sym << " act " << to_string(act));
        REQUIRE(same_bits(emu_linear(x, w, act), reference(x, w, act)));
      }
}

TEST_CASE("the AMX kernels give the same bytes for any split of N (threads)", "[gemm][amx]") {
  std::mt19937 rng(45);
  const Index M = 33, N = 100, K = 200;
  for (int bits : {8, 4}) {
    const Scheme s = bits == 8 ? Scheme::per_channel(8) : Scheme::per_group(4, 32, false);
    const auto w = test::random_packed(bits, N, K, s, rng);
    const MatrixXfR x = test::random_x(M, K, rng);
    const MatrixXfR whole = emu_linear(x, w, ActivationQuant::int8);
    MatrixXfR parts = MatrixXfR::Zero(M, N);
    for (auto [n0, n1] : {std::pair<Index, Index>{0, 16}, {16, 48}, {48, 64}, {64, 100}})
      parts = emu_linear(x, w, ActivationQuant::int8, n0, n1, &parts);
    CHECK(same_bits(whole, parts));
    CHECK(same_bits(whole, reference(x, w, ActivationQuant::int8)));
  }
}

TEST_CASE("fewer than 16 rows run on the untiled kernels with the same results", "[gemm][amx]") {
  std::mt19937 rng(46);
  for (Index M : {1, 2, 15}) {
    const auto w = test::random_packed(4, 40, 130, Scheme::per_group(4, 32), rng);
    const MatrixXfR x = test::random_x(M, 130, rng);
    detail::QuantizedActivations a;
    kernels::amx_emu::quantize(x.data(), M, 130, 130, w, ActivationQuant::int8, a);
    CHECK(!kernels::amx_emu::tiles_apply(a, w));
    CHECK(same_bits(emu_linear(x, w, ActivationQuant::int8), reference(x, w, ActivationQuant::int8)));
  }
}

#if defined(__x86_64__)
TEST_CASE("the AMX namespace's AVX-512 code over emulated tiles equals the reference", "[gemm][amx]") {
  if (!cpu::is_supported(cpu::Isa::avx512_vnni)) {
    SUCCEED("this CPU has no AVX-512 VNNI: the AMX kernels' vector code cannot run here");
    return;
  }
  std::mt19937 rng(47);
  size_t i = 0;
  for (const KCase& c : kernel_cases())
    for (Index K : {33, 256, 1025}) {
      const Index M = i % 2 ? 17 : 48, N = i % 3 ? 33 : 20;
      ++i;
      const auto w = test::random_packed(c.bits, N, K, c.scheme, rng, i % 2 ? test::Codes::extreme : test::Codes::random);
      const MatrixXfR x = test::random_x(M, K, rng);
      detail::QuantizedActivations a;
      detail::kernel_set(cpu::Isa::amx).quantize(x.data(), M, K, K, w, c.act, a);
      if (!kernels::amx::tiles_apply(a, w)) continue;
      MatrixXfR y(M, N);
      Emulated t;
      kernels::amx::linear_int_tiles(t, a, w, y.data(), N, 0, N);
      INFO("bits " << c.bits << " gs " << c.scheme.group_size << " act " << to_string(c.act) << " K " << K);
      REQUIRE(same_bits(y, reference(x, w, c.act)));
    }
}

TEST_CASE("real AMX tiles: the configuration loads whole and the tile ops match the emulation", "[gemm][amx]") {
  if (!cpu::is_supported(cpu::Isa::amx)) {
    SUCCEED("this CPU (or OS) has no AMX: the hardware tiles are tested on AMX machines only");
    return;
  }
  tiles::Hardware h;
  Config out;
  for (Index kr : {16, 8, 15}) {
    load_fresh_config(h, kr);
    h.store_config(out);  // STTILECFG read-back
    kernels::amx_emu::TilePlan p;
    p.step_rows = kr;
    const Config want = kernels::amx_emu::tile_config(p);
    INFO("step rows " << kr);
    CHECK(std::memcmp(out.bytes, want.bytes, 64) == 0);
  }
  h.release();
  std::mt19937 rng(48);
  const Config cfg = config_bytes({{7, 20}, {7, 12}, {3, 20}, {16, 64}, {16, 64}, {16, 64}});
  for (int variant = 0; variant < 4; ++variant) {
    const auto cmem = random_bytes(1024, rng), amem = random_bytes(1024, rng), bmem = random_bytes(1024, rng);
    Emulated e;
    std::vector<uint8_t> got_h(1024, 0), got_e(1024, 0), full_h(1024, 0), full_e(1024, 0);
    auto run = [&](auto& t, std::vector<uint8_t>& got, std::vector<uint8_t>& full) {
      t.load_config(cfg);
      t.template load<0>(cmem.data(), 64);
      t.template load<1>(amem.data(), 64);
      t.template load<2>(bmem.data(), 64);
      t.template load<3>(cmem.data(), 64);
      t.template load<4>(amem.data(), 64);
      t.template load<5>(bmem.data(), 64);
      switch (variant) {
        case 0: t.template dpbssd<0, 1, 2>(); t.template dpbssd<3, 4, 5>(); break;
        case 1: t.template dpbsud<0, 1, 2>(); t.template dpbsud<3, 4, 5>(); break;
        case 2: t.template dpbusd<0, 1, 2>(); t.template dpbusd<3, 4, 5>(); break;
        default: t.template dpbuud<0, 1, 2>(); t.template dpbuud<3, 4, 5>(); break;
      }
      t.template store<0>(got.data(), 64);
      t.template store<3>(full.data(), 64);
      t.release();
    };
    run(h, got_h, full_h);
    run(e, got_e, full_e);
    INFO("variant " << variant);
    CHECK(got_h == got_e);
    CHECK(full_h == full_e);
  }
}

TEST_CASE("real AMX kernels equal the reference", "[gemm][amx]") {
  if (!cpu::is_supported(cpu::Isa::amx)) {
    SUCCEED("this CPU (or OS) has no AMX");
    return;
  }
  std::mt19937 rng(49);
  size_t i = 0;
  for (const KCase& c : kernel_cases())
    for (Index K : {33, 256, 1025}) {
      const Index M = i % 2 ? 17 : 128, N = i % 3 ? 65 : 20;
      ++i;
      const auto w = test::random_packed(c.bits, N, K, c.scheme, rng, i % 2 ? test::Codes::extreme : test::Codes::random);
      const MatrixXfR x = test::random_x(M, K, rng, i % 2 ? test::Codes::extreme : test::Codes::random);
      detail::QuantizedActivations a;
      detail::kernel_set(cpu::Isa::amx).quantize(x.data(), M, K, K, w, c.act, a);
      MatrixXfR y(M, N);
      detail::kernel_set(cpu::Isa::amx).linear_int(a, w, y.data(), N, 0, N);
      INFO("bits " << c.bits << " gs " << c.scheme.group_size << " act " << to_string(c.act) << " K " << K);
      REQUIRE(same_bits(y, reference(x, w, c.act)));
    }
}
#endif
