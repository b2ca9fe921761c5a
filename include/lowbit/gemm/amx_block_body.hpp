// amx_block_body.hpp: the AMX prefill driver for block-form weights (GGUF's Q8_0 ... Q6_K), written against the tile policy and V.
// Deliberately without #pragma once: kernels_amx.hpp includes it after amx_body.hpp inside
// kernels::amx (real tiles, AVX-512 vectors) and kernels::amx_emu (emulated tiles, portable
// vectors). It computes exactly what kernels::reference::linear_block_int defines.
//
// Blocking (the tile numbers and C-tile helpers of amx_body.hpp): panels of 2 blocks (32
// channels) > super-blocks > pairs of A tiles (32 rows) > sub-blocks > steps. For each (panel,
// super-block) the codes of both blocks are widened once into B rows of int8 u - zero (16 lanes x
// 4 columns a row; |u - zero| <= 127, see block_tiles_apply) and reused by every A pair, so the
// tiles (TDPBSSD) sum c * (u - zero) directly and no zero * sum(c) term remains. A step is one
// sub-block (4 or 8 rows) for layouts with sub-scales, and 16 rows (8 when the super-block is not
// a multiple of 64 columns) without. Integer sums, exact in int32 (see BlockWeights' bound):
//   with sub-scales: C tiles of each sub-block are stored and A += sc_j * C (int32 lanes);
//   without: the C tiles run over the whole super-block and are A.
// At the super-block's end, the reference's float steps in its order, per row and block:
//   A -= za * wsum (uint8 activations); t = fma(float(A), d (* s_a[m,s]), t);
//   offset: B = sum_j mn_j * sum_{k in j} c (- za * msum), or sum_s c - za * S without sub-mins;
//           t = fma(float(B), m (* s_a[m,s]), t);
// and after the last super-block y = t * s_a[m] (per-row activations) or y = t.

namespace blocktiles {

/// B rows (4 columns each) of one tile step of L.
inline Index step_rows(const BlockLayout& L) noexcept {
  if (L.pairs()) return L.sub_block() / 4;
  return L.super_block() % 64 == 0 ? 16 : 8;
}

/// Longest super-block the tiles take (its widened B rows, 2 x S / 4 x 64 bytes, are one buffer).
inline constexpr Index max_super_block = 512;

/// True when every u - zero of L is an int8 (GGUF's formats: always).
inline bool codes_fit_int8(const BlockLayout& L) noexcept {
  const int umax = (1 << L.bits()) - 1;
  return L.zero() <= 128 && umax - L.zero() <= 127;
}

/// The configuration: C tiles 16 x 64 bytes (tmm0..3), A tiles 16 x 4 * kr (tmm4, 5), B tiles kr x 64 (tmm6, 7).
inline amx_tiles::Config config(Index kr) noexcept {
  amx_tiles::Config c;
  for (int t = 0; t < 4; ++t) c.set(t, 16, 64);
  c.set(4, 16, int(4 * kr)).set(5, 16, int(4 * kr));
  c.set(6, int(kr), 64).set(7, int(kr), 64);
  return c;
}

/// Widens the codes of one record (a block's super-block) into B rows: row (g * R + v) of the
/// output holds columns 4v .. 4v + 3 of group g (R = group_cols / 4 rows a group), byte
/// lane * 4 + j = u - zero of column 4v + j and row lane, as int8.
template <int LW, int HW>
void widen(const BlockLayout& L, const uint8_t* rec, int8_t* out) noexcept {
  constexpr int FL = 8 / LW, FH = 8 / (HW ? HW : 8);  // FH = 1 without a high plane
  constexpr unsigned ML = (1u << LW) - 1, MH = (1u << HW) - 1;
  const Index R = L.group_cols() / 4, groups = L.super_block() / L.group_cols();
  const int zero = L.zero();
  for (Index g = 0; g < groups; ++g) {
    const uint8_t* grp = rec + size_t(g) * L.group_bytes();
    for (Index v = 0; v < R; ++v) {
      const uint8_t* lo = grp + L.low_offset() + size_t(v / FL) * 64;
      const unsigned sl = unsigned(LW * (v % FL));
      int8_t* dst = out + (g * R + v) * 64;
      if constexpr (HW == 0) {
        for (int i = 0; i < 64; ++i) dst[i] = int8_t(int((unsigned(lo[i]) >> sl) & ML) - zero);
      } else {
        const uint8_t* hi = grp + L.high_offset() + size_t(v / FH) * 64;
        const unsigned sh = unsigned(HW * (v % FH));
        for (int i = 0; i < 64; ++i)
          dst[i] = int8_t(int(((unsigned(lo[i]) >> sl) & ML) | (((unsigned(hi[i]) >> sh) & MH) << LW)) - zero);
      }
    }
  }
}

using WidenFn = void (*)(const BlockLayout&, const uint8_t*, int8_t*) noexcept;

inline WidenFn choose_widen(const BlockLayout& L) noexcept {
  switch (L.low_width() * 8 + L.high_width()) {
    case 8 * 8: return widen<8, 0>;
    case 4 * 8 + 1: return widen<4, 1>;
    case 4 * 8 + 2: return widen<4, 2>;
    case 2 * 8: return widen<2, 0>;
    case 2 * 8 + 1: return widen<2, 1>;
    default: return widen<4, 0>;
  }
}

/// Sub-scales and sub-mins of one record, per sub-block jl and lane (as the layout stores them:
/// int8, or Q2_K's nibbles sc | mn << 4).
inline void sub_params(const BlockLayout& L, const uint8_t* rec, int32_t* sc, int32_t* mn) noexcept {
  const Index subs = L.super_block() / L.sub_block();
  const bool nib = L.sc_store() == BlockLayout::Scales::nibbles, mins = L.mn_store() != BlockLayout::Scales::none;
  for (Index jl = 0; jl < subs; ++jl) {
    const uint8_t* pair = rec + size_t(jl / 2) * L.group_bytes() + size_t(jl % 2);
    for (Index lane = 0; lane < 16; ++lane) {
      const uint8_t b = pair[2 * lane];
      sc[jl * 16 + lane] = nib ? b & 0xF : int(int8_t(b));
      mn[jl * 16 + lane] = !L.offset() ? 0 : nib ? b >> 4 : mins ? int(int8_t(pair[L.mn_offset() + 2 * size_t(lane)])) : 1;
    }
  }
}

struct Workspace {
  std::vector<int8_t> a;         // activation codes: [Mpad][K], rows >= M zero
  std::vector<int8_t> b;         // widened B rows of one super-block: [2][S / 4][64]
  std::vector<int32_t> c;        // C tiles of one sub-block: [mt][j][16][16]
  std::vector<int32_t> acc;      // int32 super-block sums A of one A pair: [32][32]
  std::vector<int32_t> sc, mn;   // [2][sub-blocks of a super-block][16]
  std::vector<float> t;          // float sums: [Mpad][32]
};

inline Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

struct Args {
  const ::lowbit::detail::QuantizedActivations* a;
  const BlockLayout* L;
  Index K, kr, s, b0;
  const int8_t* apack;
  const int8_t* b[2];
  const uint8_t* rec[2];
  const int32_t* sc[2];
  const int32_t* mn[2];
  int32_t* c;
  int32_t* acc;
  float* t;
};

/// One A pair (MT tiles of 16 rows from row m0) against the panel's NT blocks over super-block x.s.
template <int MT, int NT, class T>
void super_block(T& tiles, const Args& x, Index m0) noexcept {
  const BlockLayout& L = *x.L;
  const auto& a = *x.a;
  const Index S = L.super_block(), J = L.sub_block(), kr = x.kr, kb = 4 * kr, K = x.K;
  const Index k0 = x.s * S;
  const int8_t* ap0 = x.apack + m0 * K + k0;
  const int8_t* ap1 = MT > 1 ? ap0 + 16 * K : ap0;
  const int8_t* bp0 = x.b[0];
  const int8_t* bp1 = NT > 1 ? x.b[1] : bp0;
  int32_t* const acc = x.acc;
  int32_t* const cb = x.c;
  auto steps = [&](Index c0, Index c1) LOWBIT_ALWAYS_INLINE {  // columns [c0, c1) of the super-block
    for (Index c = c0; c < c1; c += kb) {
      tiles.template load<4>(ap0 + c, K);
      if constexpr (MT > 1) tiles.template load<5>(ap1 + c, K);
      tiles.template load<6>(bp0 + c * 16, 64);
      if constexpr (NT > 1) tiles.template load<7>(bp1 + c * 16, 64);
      tiles.template dpbssd<0, 4, 6>();
      if constexpr (NT > 1) tiles.template dpbssd<1, 4, 7>();
      if constexpr (MT > 1) tiles.template dpbssd<2, 5, 6>();
      if constexpr (MT > 1 && NT > 1) tiles.template dpbssd<3, 5, 7>();
    }
  };
  if (L.pairs()) {
    // A = sum_j sc_j * C_j: each sub-block's C tiles stored, scaled per lane, added in int32.
    for (Index jl = 0; jl < S / J; ++jl) {
      c_zero<MT, NT>(tiles);
      steps(jl * J, (jl + 1) * J);
      c_store<MT, NT>(tiles, cb, 64, 2 * 256, 256);
      for (int j = 0; j < NT; ++j) {
        const auto sc = V::load_i(x.sc[j] + jl * 16);
        for (int r = 0; r < 16 * MT; ++r) {
          const auto prod = V::mul(V::load_i(cb + ((r / 16 * 2 + j) * 16 + r % 16) * 16), sc);
          int32_t* dst = acc + r * 32 + 16 * j;
          V::store_i(dst, jl == 0 ? prod : V::add(V::load_i(dst), prod));
        }
      }
    }
  } else {
    c_zero<MT, NT>(tiles);
    steps(0, S);
    c_store<MT, NT>(tiles, acc, 128, 16 * 32, 16);
  }
  // The super-block's float steps, in the reference's order.
  const bool offset = L.offset(), asym = a.asymmetric, pg = a.per_group, pairs = L.pairs();
  const Index subs = S / J;
  for (int j = 0; j < NT; ++j) {
    const Index blk = x.b0 + j;
    const auto dv = V::load_half(x.rec[j] + L.d_offset());
    const auto mv = offset ? V::load_half(x.rec[j] + L.m_offset()) : V::zero_f();
    for (int r = 0; r < 16 * MT; ++r) {
      const Index m = m0 + r;
      if (m >= a.rows) break;
      const int32_t za = a.zero[size_t(m)];
      auto Ai = V::load_i(acc + r * 32 + 16 * j);
      if (asym) Ai = V::sub(Ai, V::mul(V::set_i(za), V::load_i(L.wsums(blk, x.s))));
      const auto sa = V::set_f(pg ? a.row_scale(m, x.s) : 1.0f);
      float* tp = x.t + m * 32 + 16 * j;
      auto t = V::fma(V::to_f(Ai), pg ? V::mul(dv, sa) : dv, V::load_s32(tp));
      if (offset) {
        typename V::F bf;
        if (pairs) {
          const int16_t* cs = a.sub_sums.data() + m * a.sub_stride + x.s * subs;
          auto Bi = V::mul(V::load_i(x.mn[j]), V::set_i(cs[0]));
          for (Index jl = 1; jl < subs; ++jl) Bi = V::add(Bi, V::mul(V::load_i(x.mn[j] + jl * 16), V::set_i(cs[jl])));
          if (asym) Bi = V::sub(Bi, V::mul(V::set_i(za), V::load_i(L.msums(blk, x.s))));
          bf = V::to_f(Bi);
        } else {
          bf = V::set_f(float(a.group_sum(m, x.s) - za * int32_t(S)));
        }
        t = V::fma(bf, pg ? V::mul(mv, sa) : mv, t);
      }
      V::store(tp, t);
    }
  }
}

}  // namespace blocktiles

/// True when linear_block_int runs block-form weights on tiles: M >= 16, codes whose u - zero
/// fit int8 and super-blocks of at most 512 columns (every GGUF format); else the untiled block
/// kernels run (same results).
inline bool block_tiles_apply(const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w) noexcept {
  if (!w.is_block()) return false;
  const BlockLayout& L = w.block();
  return a.rows >= 16 && a.cols == L.cols() && a.stride >= L.cols() &&
         L.super_block() <= blocktiles::max_super_block && blocktiles::codes_fit_int8(L);
}

/// The tiled block kernel with an explicit tile-operations object. Needs block_tiles_apply(a, w)
/// and the block sums of a (block_activation_sums).
template <class T>
void linear_block_int_tiles(T& tiles, const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w,
                            float* y, Index ldy, Index n0, Index n1) noexcept {
  namespace bt = blocktiles;
  const BlockLayout& L = w.block();
  const Index M = a.rows, K = L.cols(), S = L.super_block(), subs = S / L.sub_block();
  const Index Mpad = (M + 15) / 16 * 16, kr = bt::step_rows(L);
  bt::Workspace& ws = bt::workspace();
  int8_t* apack = TileWorkspace::aligned(ws.a, size_t(Mpad * K));
  for (Index m = 0; m < Mpad; ++m) {
    if (m < M)
      std::memcpy(apack + m * K, a.row(m), size_t(K));
    else
      std::memset(apack + m * K, 0, size_t(K));
  }
  int8_t* bbuf = TileWorkspace::aligned(ws.b, size_t(2 * (S / 4) * 64));
  int32_t* scbuf = TileWorkspace::aligned(ws.sc, size_t(2 * subs * 16));
  int32_t* mnbuf = TileWorkspace::aligned(ws.mn, size_t(2 * subs * 16));
  bt::Args x{};
  x.a = &a;
  x.L = &L;
  x.K = K;
  x.kr = kr;
  x.apack = apack;
  x.c = TileWorkspace::aligned(ws.c, size_t(2 * 2 * 16 * 16));
  x.acc = TileWorkspace::aligned(ws.acc, size_t(32 * 32));
  x.t = TileWorkspace::aligned(ws.t, size_t(Mpad * 32));
  for (int j = 0; j < 2; ++j) {
    x.b[j] = bbuf + j * (S / 4) * 64;
    x.sc[j] = scbuf + j * subs * 16;
    x.mn[j] = mnbuf + j * subs * 16;
  }
  const bt::WidenFn widen = bt::choose_widen(L);

  tiles.load_config(bt::config(kr));
  const Index b_end = (n1 + 15) / 16;
  for (Index b0 = n0 / 16; b0 < b_end; b0 += 2) {
    const int nbs = b_end - b0 >= 2 ? 2 : 1;
    x.b0 = b0;
    std::fill(x.t, x.t + M * 32, 0.0f);
    for (Index s = 0; s < L.supers(); ++s) {
      x.s = s;
      for (int j = 0; j < nbs; ++j) {
        x.rec[j] = L.record(b0 + j, s);
        widen(L, x.rec[j], bbuf + j * (S / 4) * 64);
        if (L.pairs()) bt::sub_params(L, x.rec[j], scbuf + j * subs * 16, mnbuf + j * subs * 16);
      }
      for (Index m0 = 0; m0 < Mpad; m0 += 32) {
        const bool two = Mpad - m0 >= 32;
        if (two && nbs == 2)
          bt::super_block<2, 2>(tiles, x, m0);
        else if (two)
          bt::super_block<2, 1>(tiles, x, m0);
        else if (nbs == 2)
          bt::super_block<1, 2>(tiles, x, m0);
        else
          bt::super_block<1, 1>(tiles, x, m0);
      }
    }
    for (Index m = 0; m < M; ++m)
      for (int j = 0; j < nbs; ++j) {
        const Index n = (b0 + j) * 16;
        const auto tv = V::load_s32(x.t + m * 32 + 16 * j);
        const auto v = a.per_group ? tv : V::mul(tv, V::set_f(a.row_scale(m, 0)));
        float* dst = y + m * ldy + n;
        if (n + 16 <= n1) {
          V::store(dst, v);
        } else {
          alignas(64) float tmp[16];
          V::store(tmp, v);
          for (Index i = 0; i < n1 - n; ++i) dst[i] = tmp[i];
        }
      }
  }
  tiles.release();
}

/// The block-form entry of this Isa (block_kernel_set(Isa::amx)): tiles where block_tiles_apply,
/// else this Isa's untiled block kernels (the portable ones for configurations they do not cover).
inline void linear_block_int(const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w, float* y,
                             Index ldy, Index n0, Index n1) noexcept {
  if (block_tiles_apply(a, w)) {
    Tiles tiles;
    linear_block_int_tiles(tiles, a, w, y, ldy, n0, n1);
  } else if (fallback::block_int_covers(w.block())) {
    fallback::linear_block_int(a, w, y, ldy, n0, n1);
  } else {
    ::lowbit::kernels::scalar::linear_block_int(a, w, y, ldy, n0, n1);
  }
}
