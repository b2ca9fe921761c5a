// kernels_amx.hpp: AMX-INT8 prefill kernels (tiles of 16 x 64 bytes), on the hardware and through the exact emulation.
#pragma once

#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/amx_tiles.hpp>
#include <lowbit/gemm/block_layout.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/kernels_avx512.hpp>
#include <lowbit/gemm/kernels_scalar.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

// kernels::amx_emu: the AMX driver over emulated tiles and the portable vectors. It runs on every
// machine and gives exactly the results of kernels::amx (tests call it directly); not for speed.
namespace lowbit::kernels::amx_emu {

struct V : scalar::V {
  static W sub_b(const W& a, const W& b) {
    W r;
    for (int i = 0; i < 64; ++i) r.b[i] = uint8_t(a.b[i] - b.b[i]);
    return r;
  }
  static void store_b(int8_t* p, const W& v) { std::memcpy(p, v.b, 64); }
  static W lanes_b(const uint8_t* p) {
    W r;
    for (int i = 0; i < 64; ++i) r.b[i] = p[i / 4];
    return r;
  }
  static W set_b(int x) {
    W r;
    std::memset(r.b, x & 0xFF, 64);
    return r;
  }
};

using Tiles = amx_tiles::Emulated;
namespace fallback = ::lowbit::kernels::scalar;

#include <lowbit/gemm/amx_body.hpp>
#include <lowbit/gemm/amx_block_body.hpp>

}  // namespace lowbit::kernels::amx_emu

#if defined(LOWBIT_X86)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
// GCC 12 flags the deliberately undefined vectors inside its own intrinsics (_mm512_undefined_*).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#endif

// kernels::amx: the real tiles; the fold, the widening of 4-bit codes and everything untiled
// (M < 16, float activations, activation quantization, block-form weights the tiles do not take)
// use AVX-512 VNNI.
namespace lowbit::kernels::amx {

struct V : avx512_vnni::V {
  static W sub_b(W a, W b) { return _mm512_sub_epi8(a, b); }
  static void store_b(int8_t* p, W v) { _mm512_storeu_si512(p, v); }
  static W lanes_b(const uint8_t* p) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm512_mullo_epi32(v, _mm512_set1_epi32(0x01010101));
  }
  static W set_b(int x) { return _mm512_set1_epi8(char(x)); }
};

using Tiles = amx_tiles::Hardware;
namespace fallback = ::lowbit::kernels::avx512_vnni;

#include <lowbit/gemm/amx_body.hpp>
#include <lowbit/gemm/amx_block_body.hpp>

}  // namespace lowbit::kernels::amx

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

#endif  // LOWBIT_X86
