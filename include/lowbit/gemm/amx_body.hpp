// amx_body.hpp: the AMX prefill driver, written against a tile-operations policy and a vector type V.
// Deliberately without #pragma once: kernels_amx.hpp includes it twice, inside kernels::amx (real
// tiles and AVX-512 vectors, in the AMX target region) and inside kernels::amx_emu (emulated tiles
// and portable vectors), so the loops that run on the hardware run, exactly, everywhere else too.
// It computes exactly what kernels::reference defines.
//
// The enclosing namespace provides:
//   struct V: kernel_body.hpp's vector contract (int32 / float lanes of one 16-channel block) plus
//     the byte ops of one 64-byte B-tile row: W sub_b(W, W) (bytewise, wrapping), void
//     store_b(int8_t*, W), W lanes_b(const uint8_t* 16 lane values) (lane i's value in bytes
//     4i..4i+3), W set_b(int);
//   using Tiles = the tile-operations policy (amx_tiles::Hardware or amx_tiles::Emulated);
//   namespace fallback: the kernels of this Isa that are not tiled (M < 16, float activations,
//     activation quantization).
//
// Blocking: 2 x 2 C tiles of 16 x 16 int32 (tmm0..3) over 32 rows x 32 channels, A tiles of 16 rows
// x 4 * step_rows activation bytes (tmm4, tmm5), B tiles of step_rows rows of 16 channels x 4 k
// (tmm6, tmm7). Loops: panels of 2 blocks (32 channels) > k-blocks of <= 128 B rows (512 k) whose
// B panel stays in L1 > pairs of A tiles (32 rows) > the groups inside the k-block > steps. Integer
// sums of a group are exact in the tiles; at the group's end the C tiles are stored and folded
// into the float sums t with the reference's operations in the reference's order.

// ---- weight layouts: the one step a new PackedWeights layout needs ----------------------------
// Each layout fills B-tile rows: row r of block b holds, for its 16 lanes, the 4 weight values of
// k = 4r..4r+3 (64 bytes). It says whether they are signed (TDPBSSD) or unsigned (TDPBSUD) and
// whether the fold still subtracts zw * sum(c) (when the rows hold u rather than u - zw). Rows at
// or past the padded K must be zero (the A tiles there may hold anything).

/// The 8-bit layout: chunk c of a block is already B row c (u unsigned, 16 lanes x 4 k).
struct BytesLayout {
  static constexpr bool signed_b = false, folds_zw = true;
  /// Rows [r0, r1) of block b: straight from the packed chunks, or (when they run past the padded K)
  /// copied into `buf` (64-byte rows) with zero rows after the last chunk.
  static const uint8_t* rows(const PackedWeights& w, Index b, Index r0, Index r1, Index, int8_t* buf) noexcept {
    const Index avail = w.chunks();
    if (r1 <= avail) return w.chunk(b, r0);
    const Index real = std::max<Index>(0, avail - r0);
    if (real > 0) std::memcpy(buf, w.chunk(b, r0), size_t(real) * 64);
    std::memset(buf + real * 64, 0, size_t(r1 - r0 - real) * 64);
    return reinterpret_cast<const uint8_t*>(buf);
  }
};

/// The 4-bit layout (bits 2..4): chunk c holds B row 2c in its low nibbles and row 2c + 1 in its
/// high nibbles; rows are widened to int8 u - zw (at most 15 in magnitude), so the tiles sum
/// c * (u - zw) directly.
struct NibblesLayout {
  static constexpr bool signed_b = true, folds_zw = false;
  static const uint8_t* rows(const PackedWeights& w, Index b, Index r0, Index r1, Index group_rows,
                             int8_t* buf) noexcept {
    const Index avail = 2 * w.chunks();
    const uint8_t* zp = w.zero_points(b);
    Index g = -1;
    typename V::W zw = V::set_b(0);
    for (Index r = r0; r < r1;) {
      int8_t* out = buf + (r - r0) * 64;
      if (r >= avail) {
        std::memset(out, 0, 64);
        ++r;
        continue;
      }
      if (r / group_rows != g) {  // rows 2c and 2c + 1 share a group: group sizes are multiples of 8
        g = r / group_rows;
        zw = zp ? V::lanes_b(zp + g * 16) : V::set_b(w.zero_const());
      }
      typename V::W lo, hi;
      V::load4(w.chunk(b, r / 2), lo, hi);
      if (r % 2 == 0) {
        V::store_b(out, V::sub_b(lo, zw));
        if (r + 1 < r1) V::store_b(out + 64, V::sub_b(hi, zw));
        r += 2;
      } else {
        V::store_b(out, V::sub_b(hi, zw));
        r += 1;
      }
    }
    return reinterpret_cast<const uint8_t*>(buf);
  }
};

// ---- the plan: how the tiles walk K for one PackedWeights ----------------------------------------

/// Rows are B-tile rows (4 k each). Groups start at multiples of group_rows; every step covers
/// step_rows rows and never crosses a group boundary.
struct TilePlan {
  Index step_rows = 0;   ///< B rows per step: A tiles are 16 x (4 * step_rows) bytes
  Index group_rows = 0;  ///< rows of one group (all rows for weights with one group)
  Index groups = 0;
  Index rows = 0;        ///< rows the steps cover: ceil(K / 4) rounded up to whole steps
  Index block_rows = 0;  ///< rows of one k-block (its B panel, 2 x 64 bytes a row, stays in L1)
  bool whole_groups = false;  ///< k-blocks hold whole groups, else pieces of one group

  Index steps() const noexcept { return rows / step_rows; }
  Index group_len(Index g) const noexcept { return g + 1 < groups ? group_rows : rows - g * group_rows; }
  /// End of the k-block that starts at row r0.
  Index block_end(Index r0) const noexcept {
    if (whole_groups) return std::min(rows, r0 + block_rows);
    const Index g = r0 / group_rows;
    return std::min(g * group_rows + group_len(g), r0 + block_rows);
  }
};

/// Rows of the largest k-block (sizes the B panel buffer).
inline constexpr Index max_block_rows = 128;
/// Steps of fewer rows than this run on the fallback kernels (group sizes like 8 or 68, whose
/// only whole-group steps are 4 or 8 k: tiles would waste most of each dot product).
inline constexpr Index min_step_rows = 4;

inline TilePlan tile_plan(const PackedWeights& w) noexcept {
  TilePlan p;
  const Index real = (w.cols() + 3) / 4;
  p.groups = w.groups();
  if (p.groups == 1) {  // one group spans K: 64-k steps, K padded to whole steps
    p.step_rows = 16;
    p.rows = (real + 15) / 16 * 16;
    p.group_rows = p.rows;
  } else {
    p.group_rows = w.group_size() / 4;
    for (Index d = 16; d >= 1; --d)
      if (p.group_rows % d == 0) {
        p.step_rows = d;
        break;
      }
    const Index last_real = real - (p.groups - 1) * p.group_rows;
    p.rows = (p.groups - 1) * p.group_rows + (last_real + p.step_rows - 1) / p.step_rows * p.step_rows;
  }
  p.whole_groups = p.group_rows <= max_block_rows;
  p.block_rows = p.whole_groups ? max_block_rows / p.group_rows * p.group_rows
                                : max_block_rows / p.step_rows * p.step_rows;
  return p;
}

/// The configuration of a plan: C tiles 16 x 64 bytes, A tiles 16 x 4*step_rows, B tiles step_rows x 64.
inline amx_tiles::Config tile_config(const TilePlan& p) noexcept {
  amx_tiles::Config c;
  for (int t = 0; t < 4; ++t) c.set(t, 16, 64);
  c.set(4, 16, int(4 * p.step_rows)).set(5, 16, int(4 * p.step_rows));
  c.set(6, int(p.step_rows), 64).set(7, int(p.step_rows), 64);
  return c;
}

/// True when linear_int runs on tiles (lowbit's 8-bit or 4-bit layout, M >= 16 and steps of at
/// least min_step_rows rows); else the fallback kernels run (same results). Block-form weights
/// (GGUF formats, PackedWeights::is_block) never run on tiles: their layout is not a B tile.
inline bool tiles_apply(const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w) noexcept {
  return !w.is_block() && a.rows >= 16 && a.stride >= w.cols() && tile_plan(w).step_rows >= min_step_rows;
}

// ---- per-thread buffers ---------------------------------------------------------------------

struct TileWorkspace {
  std::vector<int8_t> a;     // A tiles: [m-tile][step][16][4 * step_rows]
  std::vector<int8_t> b;     // the B panel of one k-block: [2][max_block_rows][64]
  std::vector<int32_t> acc;  // C of groups that continue into the next k-block: [Mpad][32]
  std::vector<float> t;      // float sums across groups: [Mpad][32]
  std::vector<int32_t> c;    // C tiles of one A pair to fold, 2 groups: [2][2][2][16][16]

  /// n elements of v, 64-byte aligned.
  template <class T>
  static T* aligned(std::vector<T>& v, size_t n) {
    v.resize(n + 64 / sizeof(T));
    const auto addr = reinterpret_cast<uintptr_t>(v.data());
    return v.data() + ((64 - addr % 64) % 64) / sizeof(T);
  }
};

inline TileWorkspace& tile_workspace() {
  thread_local TileWorkspace ws;
  return ws;
}

/// Packs activation codes into A tiles: tile (mt, s) holds rows 16 mt .. 16 mt + 15 and bytes
/// 4 * step_rows * s onward; rows at or past M and bytes at or past K are zero.
inline void pack_a(const ::lowbit::detail::QuantizedActivations& a, const TilePlan& p, Index m_tiles,
                   int8_t* out) noexcept {
  const Index kb = 4 * p.step_rows, steps = p.steps(), K = a.cols;
  for (Index mt = 0; mt < m_tiles; ++mt)
    for (Index s = 0; s < steps; ++s) {
      int8_t* tile = out + (mt * steps + s) * 16 * kb;
      const Index k0 = s * kb, n = std::max<Index>(0, std::min(kb, K - k0));
      for (Index r = 0; r < 16; ++r) {
        const Index m = 16 * mt + r;
        int8_t* dst = tile + r * kb;
        if (m < a.rows && n == 64) {
          std::memcpy(dst, a.row(m) + k0, 64);
        } else {
          const Index len = m < a.rows ? n : 0;
          if (len > 0) std::memcpy(dst, a.row(m) + k0, size_t(len));
          std::memset(dst + len, 0, size_t(kb - len));
        }
      }
    }
}

// ---- the fold: group sums into float sums, in the reference's order ------------------------------

struct FoldArgs {
  const ::lowbit::detail::QuantizedActivations* a;
  const PackedWeights* w;
  int32_t* c;  // C tiles of up to 2 groups: [group][mt][j][16][16]
  float* t;    // [Mpad][32]
};

/// Folds F consecutive groups g, g + 1 (F <= 2) of rows m0 + 16 mt + r (< M) and blocks b0 + j
/// into t: D = C - zw * sum(c) (layouts that hold u) - za * wsum (uint8 activations), then
/// t = fma(float(D), s_w (* s_a per group), t), group after group as the reference does. Two
/// groups share one load and one store of t (small groups: fewer stores per group).
template <bool FoldsZw, bool PerGroup, bool AsymA, bool AsymW, int F>
void fold_tiles(const FoldArgs& f, Index m0, int mts, Index b0, int nbs, Index g) noexcept {
  const auto& a = *f.a;
  const auto& w = *f.w;
  const int zc = w.zero_const();
  for (int j = 0; j < nbs; ++j) {
    const Index blk = b0 + j;
    typename V::F sw[F];
    typename V::I zw[F], ws[F];
    for (int q = 0; q < F; ++q) {
      sw[q] = w.half_scales() ? V::load_s16(w.scales16(blk) + (g + q) * 16) : V::load_s32(w.scales32(blk) + (g + q) * 16);
      zw[q] = FoldsZw && AsymW ? V::load_zw(w.zero_points(blk) + (g + q) * 16) : V::set_i(0);
      ws[q] = AsymA ? V::load_i(w.wsums(blk) + (g + q) * 16) : V::set_i(0);
    }
    for (int mt = 0; mt < mts; ++mt)
      for (Index r = 0; r < 16; ++r) {
        const Index m = m0 + 16 * mt + r;
        if (m >= a.rows) break;
        float* tp = f.t + m * 32 + 16 * j;
        auto t = V::load_s32(tp);
        auto step = [&](int q) LOWBIT_ALWAYS_INLINE {
          auto d = V::load_i(f.c + q * 1024 + ((mt * 2 + j) * 16 + r) * 16);
          if constexpr (FoldsZw) {
            const int32_t sq = a.group_sum(m, g + q);
            d = V::sub(d, AsymW ? V::mul(zw[q], V::set_i(sq)) : V::set_i(zc * sq));
          }
          if constexpr (AsymA) d = V::sub(d, V::mul(V::set_i(a.zero[size_t(m)]), ws[q]));
          typename V::F s = sw[q];
          if constexpr (PerGroup) s = V::mul(sw[q], V::set_f(a.row_scale(m, g + q)));
          t = V::fma(V::to_f(d), s, t);
        };
        step(0);
        if constexpr (F > 1) step(1);
        V::store(tp, t);
      }
  }
}

using FoldFn = void (*)(const FoldArgs&, Index, int, Index, int, Index) noexcept;

template <bool FoldsZw, int F>
FoldFn choose_fold(bool pg, bool asym_a, bool asym_w) noexcept {
  const int i = int(pg) * 4 + int(asym_a) * 2 + int(asym_w && FoldsZw);
  switch (i) {
    case 0: return fold_tiles<FoldsZw, false, false, false, F>;
    case 1: return fold_tiles<FoldsZw, false, false, true, F>;
    case 2: return fold_tiles<FoldsZw, false, true, false, F>;
    case 3: return fold_tiles<FoldsZw, false, true, true, F>;
    case 4: return fold_tiles<FoldsZw, true, false, false, F>;
    case 5: return fold_tiles<FoldsZw, true, false, true, F>;
    case 6: return fold_tiles<FoldsZw, true, true, false, F>;
    default: return fold_tiles<FoldsZw, true, true, true, F>;
  }
}

// ---- the tiled loops ------------------------------------------------------------------------

template <class L, int C, int A, int B, class T>
LOWBIT_ALWAYS_INLINE inline void tile_dot(T& tiles) noexcept {
  if constexpr (L::signed_b)
    tiles.template dpbssd<C, A, B>();
  else
    tiles.template dpbsud<C, A, B>();
}

/// C tile (mt, j) is tmm(2 mt + j); A tile mt is tmm(4 + mt); B tile j is tmm(6 + j).
template <int MT, int NT, class T>
LOWBIT_ALWAYS_INLINE inline void c_zero(T& tiles) noexcept {
  tiles.template zero<0>();
  if constexpr (NT > 1) tiles.template zero<1>();
  if constexpr (MT > 1) tiles.template zero<2>();
  if constexpr (MT > 1 && NT > 1) tiles.template zero<3>();
}
template <int MT, int NT, class T>
LOWBIT_ALWAYS_INLINE inline void c_load(T& tiles, const int32_t* p, Index stride) noexcept {
  tiles.template load<0>(p, stride);
  if constexpr (NT > 1) tiles.template load<1>(p + 16, stride);
  if constexpr (MT > 1) tiles.template load<2>(p + 16 * stride / 4, stride);
  if constexpr (MT > 1 && NT > 1) tiles.template load<3>(p + 16 * stride / 4 + 16, stride);
}
/// Stores C tiles to p with row stride `stride` bytes; tile (mt, j) at p + mt * mt_off + j * j_off.
template <int MT, int NT, class T>
LOWBIT_ALWAYS_INLINE inline void c_store(T& tiles, int32_t* p, Index stride, Index mt_off, Index j_off) noexcept {
  tiles.template store<0>(p, stride);
  if constexpr (NT > 1) tiles.template store<1>(p + j_off, stride);
  if constexpr (MT > 1) tiles.template store<2>(p + mt_off, stride);
  if constexpr (MT > 1 && NT > 1) tiles.template store<3>(p + mt_off + j_off, stride);
}

struct BlockArgs {
  const TilePlan* p;
  const int8_t* a;           // packed A tiles
  const uint8_t* b[2];       // B panel rows of the k-block, 64 bytes a row
  int32_t* acc;              // [Mpad][32]
  FoldArgs fold;
  FoldFn fold_fn[2];         // one group, two groups
};

/// One pair of A tiles (MT of them) against the panel's blocks (NT) over k-block rows [r0, r1).
template <class L, int MT, int NT, class T>
void tile_block(T& tiles, const BlockArgs& x, Index m0, Index b0, Index r0, Index r1) noexcept {
  const TilePlan& p = *x.p;
  const Index kr = p.step_rows, abytes = 16 * 4 * kr, steps = p.steps();
  const int8_t* a0 = x.a + (m0 / 16) * steps * abytes;
  const int8_t* a1 = MT > 1 ? a0 + steps * abytes : a0;  // the second A tile's rows, when there is one
  int32_t* acc = x.acc + m0 * 32;
  Index pending = -1;  // a finished group whose C tiles wait in slot 0 to be folded with the next
  for (Index g = r0 / p.group_rows;; ++g) {
    const Index gb = g * p.group_rows, ge = gb + p.group_len(g);
    const Index p0 = std::max(r0, gb), p1 = std::min(r1, ge);
    if (p0 >= r1) break;
    if (p0 == gb)
      c_zero<MT, NT>(tiles);
    else
      c_load<MT, NT>(tiles, acc, 128);
    // Locals, not x's fields: the tile loads clobber memory, so fields would be reloaded each step.
    const Index astride = 4 * kr, bstep = 64 * kr;
    const int8_t* ap0 = a0 + (p0 / kr) * abytes;
    const int8_t* ap1 = a1 + (p0 / kr) * abytes;
    const uint8_t* bp0 = x.b[0] + (p0 - r0) * 64;
    const uint8_t* bp1 = NT > 1 ? x.b[1] + (p0 - r0) * 64 : bp0;
    for (Index r = p0; r < p1; r += kr, ap0 += abytes, ap1 += abytes, bp0 += bstep, bp1 += bstep) {
      tiles.template load<4>(ap0, astride);
      if constexpr (MT > 1) tiles.template load<5>(ap1, astride);
      tiles.template load<6>(bp0, 64);
      if constexpr (NT > 1) tiles.template load<7>(bp1, 64);
      tile_dot<L, 0, 4, 6>(tiles);
      if constexpr (NT > 1) tile_dot<L, 1, 4, 7>(tiles);
      if constexpr (MT > 1) tile_dot<L, 2, 5, 6>(tiles);
      if constexpr (MT > 1 && NT > 1) tile_dot<L, 3, 5, 7>(tiles);
    }
    if (p1 == ge) {  // the group ends here: fold it, together with a pending one
      c_store<MT, NT>(tiles, x.fold.c + (pending >= 0 ? 1024 : 0), 64, 2 * 256, 256);
      if (pending >= 0) {
        x.fold_fn[1](x.fold, m0, MT, b0, NT, pending);
        pending = -1;
      } else {
        pending = g;
      }
    } else {
      c_store<MT, NT>(tiles, acc, 128, 16 * 32, 16);
    }
  }
  if (pending >= 0) x.fold_fn[0](x.fold, m0, MT, b0, NT, pending);
}

template <class L, class T>
void run_tiles(T& tiles, const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w, const TilePlan& p,
               float* y, Index ldy, Index n0, Index n1) noexcept {
  const Index M = a.rows, m_tiles = (M + 15) / 16, Mpad = 16 * m_tiles;
  TileWorkspace& ws = tile_workspace();
  int8_t* apack = TileWorkspace::aligned(ws.a, size_t(m_tiles * p.steps() * 16 * 4 * p.step_rows));
  int8_t* bpanel = TileWorkspace::aligned(ws.b, size_t(2 * max_block_rows * 64));
  BlockArgs x{};
  x.p = &p;
  x.a = apack;
  x.acc = TileWorkspace::aligned(ws.acc, size_t(Mpad * 32));
  x.fold.a = &a;
  x.fold.w = &w;
  x.fold.c = TileWorkspace::aligned(ws.c, size_t(2 * 2 * 2 * 16 * 16));
  x.fold.t = TileWorkspace::aligned(ws.t, size_t(Mpad * 32));
  x.fold_fn[0] = choose_fold<L::folds_zw, 1>(a.per_group, a.asymmetric, !w.symmetric());
  x.fold_fn[1] = choose_fold<L::folds_zw, 2>(a.per_group, a.asymmetric, !w.symmetric());
  pack_a(a, p, m_tiles, apack);

  tiles.load_config(tile_config(p));
  const Index b_end = (n1 + 15) / 16;
  for (Index b0 = n0 / 16; b0 < b_end; b0 += 2) {
    const int nbs = b_end - b0 >= 2 ? 2 : 1;
    std::fill(x.fold.t, x.fold.t + M * 32, 0.0f);
    for (Index r0 = 0; r0 < p.rows;) {
      const Index r1 = p.block_end(r0);
      for (int j = 0; j < nbs; ++j)
        x.b[j] = L::rows(w, b0 + j, r0, r1, p.group_rows, bpanel + j * max_block_rows * 64);
      for (Index m0 = 0; m0 < Mpad; m0 += 32) {
        const bool two = Mpad - m0 >= 32;
        if (two && nbs == 2)
          tile_block<L, 2, 2>(tiles, x, m0, b0, r0, r1);
        else if (two)
          tile_block<L, 2, 1>(tiles, x, m0, b0, r0, r1);
        else if (nbs == 2)
          tile_block<L, 1, 2>(tiles, x, m0, b0, r0, r1);
        else
          tile_block<L, 1, 1>(tiles, x, m0, b0, r0, r1);
      }
      r0 = r1;
    }
    // y = t (per-group activations) or t * s_a (per row), for this panel's columns.
    for (Index m = 0; m < M; ++m)
      for (int j = 0; j < nbs; ++j) {
        const Index n = (b0 + j) * 16;
        const auto tv = V::load_s32(x.fold.t + m * 32 + 16 * j);
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

/// The tiled kernel with an explicit tile-operations object (tests run the hardware namespace's
/// vectors with emulated tiles this way). Needs tiles_apply(a, w).
template <class T>
void linear_int_tiles(T& tiles, const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w, float* y,
                      Index ldy, Index n0, Index n1) noexcept {
  const TilePlan p = tile_plan(w);
  if (w.nibbles())
    run_tiles<NibblesLayout>(tiles, a, w, p, y, ldy, n0, n1);
  else
    run_tiles<BytesLayout>(tiles, a, w, p, y, ldy, n0, n1);
}

// ---- the KernelSet entries ------------------------------------------------------------------

inline void quantize(const float* x, Index M, Index K, Index ldx, const PackedWeights& w, ActivationQuant mode,
                     ::lowbit::detail::QuantizedActivations& a) {
  fallback::quantize(x, M, K, ldx, w, mode, a);
}

inline void linear_int(const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy,
                       Index n0, Index n1) noexcept {
  if (w.is_block()) return fallback::linear_block_int(a, w, y, ldy, n0, n1);  // never tiles (see tiles_apply)
  if (!tiles_apply(a, w)) return fallback::linear_int(a, w, y, ldy, n0, n1);
  Tiles tiles;
  linear_int_tiles(tiles, a, w, y, ldy, n0, n1);
}

inline void linear_f32(const float* x, Index M, Index ldx, const PackedWeights& w, float* y, Index ldy, Index n0,
                       Index n1) noexcept {
  fallback::linear_f32(x, M, ldx, w, y, ldy, n0, n1);
}
