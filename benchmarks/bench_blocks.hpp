// bench_blocks.hpp: GGUF's block formats as BlockWeights for the benchmarks (random codes and scales:
// the kernels' speed does not depend on the values), with each format's own bytes per row.
#pragma once

#include <lowbit/formats/type.hpp>
#include <lowbit/lowbit.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace lowbit::bench {

struct BlockFormat {
  const char* op;  // benchmark name
  formats::Type type;
  int bits, zero;
  Index super_block, sub_block;
  bool offset, has_sc;
  int sc_lo, sc_hi;
  bool has_mn;
};

inline const std::vector<BlockFormat>& block_formats() {
  static const std::vector<BlockFormat> f = {
      {"q8_0", formats::Type::Q8_0, 8, 128, 32, 32, false, false, 1, 1, false},
      {"q4_0", formats::Type::Q4_0, 4, 8, 32, 32, false, false, 1, 1, false},
      {"q4_1", formats::Type::Q4_1, 4, 0, 32, 32, true, false, 1, 1, false},
      {"q5_0", formats::Type::Q5_0, 5, 16, 32, 32, false, false, 1, 1, false},
      {"q5_1", formats::Type::Q5_1, 5, 0, 32, 32, true, false, 1, 1, false},
      {"q2_k", formats::Type::Q2_K, 2, 0, 256, 16, true, true, 0, 15, true},
      {"q3_k", formats::Type::Q3_K, 3, 4, 256, 16, false, true, -32, 31, false},
      {"q4_k", formats::Type::Q4_K, 4, 0, 256, 32, true, true, 0, 63, true},
      {"q5_k", formats::Type::Q5_K, 5, 0, 256, 32, true, true, 0, 63, true},
      {"q6_k", formats::Type::Q6_K, 6, 32, 256, 16, false, true, -128, 127, false},
  };
  return f;
}

/// Bytes of an N x K matrix in the format's GGUF encoding (what GB/s is counted from).
inline double format_bytes(const BlockFormat& f, Index N, Index K) {
  return double(N) * double(formats::row_bytes(f.type, uint64_t(K)));
}

inline uint16_t half_of(float x) {
  int e;
  std::frexp(x, &e);  // x in [2^(e-1), 2^e): normal halves only here
  const auto m = uint32_t(std::nearbyint(std::ldexp(double(x), 11 - e)));  // 1024..2048
  return uint16_t(uint32_t(e - 1 + 15) << 10 | ((m == 2048 ? 1024 : m) - 1024));
}

inline BlockWeights random_block_weights(const BlockFormat& f, Index N, Index K, unsigned seed) {
  std::mt19937 rng(seed);
  BlockWeights w;
  w.rows = N;
  w.cols = K;
  w.bits = f.bits;
  w.zero = f.zero;
  w.super_block = f.super_block;
  w.sub_block = f.sub_block;
  w.offset = f.offset;
  std::uniform_int_distribution<int> code(0, (1 << f.bits) - 1), sc(f.sc_lo, f.sc_hi), mn(0, f.has_mn ? 63 : 0);
  std::uniform_real_distribution<float> scale(0.001f, 0.01f);
  w.codes.resize(size_t(N * K));
  for (auto& u : w.codes) u = uint8_t(code(rng));
  const size_t nsup = size_t(N * (K / f.super_block)), nsub = size_t(N * (K / f.sub_block));
  w.d.resize(nsup);
  for (auto& h : w.d) h = half_of(scale(rng));
  if (f.offset) {
    w.m.resize(nsup);
    for (auto& h : w.m) h = uint16_t(half_of(scale(rng)) | 0x8000u);
  }
  if (f.has_sc) {
    w.sc.resize(nsub);
    for (auto& v : w.sc) v = int16_t(sc(rng));
  }
  if (f.has_mn) {
    w.mn.resize(nsub);
    for (auto& v : w.mn) v = int16_t(f.bits == 2 ? mn(rng) % 16 : mn(rng));
  }
  return w;
}

}  // namespace lowbit::bench
