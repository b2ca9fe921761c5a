// block_kernel_body.hpp: the driver for block-form weights (GGUF's Q8_0 ... Q6_K) shared by every Isa, written against V.
// Deliberately without #pragma once, like kernel_body.hpp: each kernels_<isa>.hpp includes it after
// kernel_body.hpp, inside its namespace and target region. It computes exactly what
// kernels::reference::linear_block_int / linear_block_f32 define.
//
// V's block contract, beside kernel_body.hpp's (see BlockLayout for the planes and records):
//   C                 64 bytes of codes, 16 lanes x 4 bytes (byte 4i + j: lane i, column j)
//   C c_load(p);  template <int From, int To, int Width> C c_move(const C&): ((x >> From) & (2^Width - 1)) << To
//                 in every byte;  C c_or(a, b)
//   Sub           the partial sums of one unit (BlockLayout::unit_cols): sub_zero(); sub_dot(Sub&, C, A):
//                 lane i += sum_j c[4i + j] * a[j] (codes < 64; x86 keeps them as int16 pairs)
//   Z z_load(int32 zpair)                    the unit's zero * sum c, from QuantizedActivations::zpairs
//   Sc sc_unit(); sc_load_pairs(p, nibbles, Sc& s0, Sc& s1)   per-lane sub-scales of a sub-block pair
//   Pr mn_load_pairs(p, nibbles)             per-lane sub-min pair
//   fold(I& acc, Sub, Sc): acc += sum * sc;  fold_z(I& acc, Sub, Z, Sc): acc += (sum - z) * sc
//   fold_pairs(I& acc, const int16_t* cs, Pr): acc += mn_0 * cs[0] + mn_1 * cs[1]
//   I sc_i(Sc); pr_split(Pr, I&, I&);
//   F load_half(const uint8_t* 16 halves, exact for every finite half); I add(I, I)
//   void c_store(uint8_t* p, C); constants blk_mr, blk_nb (integer tiles), blk_gemv_nb (M < blk_mr),
//   blkf_mr, blkf_nb (float32 tiles).
// Integer sums are exact in every representation (the bounds are in BlockLayout::unit_cols and
// BlockWeights' validation), so each Isa is free in how it forms them; the float steps are the
// reference's, in its order.

namespace blk {

/// Compile-time shape of one kind of block weights: plane widths, sub-block, pairs of sub-scales.
/// The driver unrolls one *unit* of COLS columns (one sub-block pair, or 32 columns without
/// sub-scales): every chunk, sub-block and int16 unit boundary inside it is a constant.
template <int LW, int HW, int SUB, bool PAIRS>
struct Cfg {
  static constexpr int FL = 8 / LW;                  // fields per byte of the low plane
  static constexpr int FH = HW ? 8 / HW : 1;         // ... of the high plane
  static constexpr int SUBS = PAIRS ? 2 : 1;         // sub-blocks per unit
  static constexpr int COLS = SUB * SUBS;            // 32 or 64
  static constexpr int NV = COLS / 4;                // code vectors (4 columns x 16 lanes) per unit
  static constexpr int VPS = SUB / 4;                // vectors per sub-block
  static constexpr int UV = int(::lowbit::detail::block_unit_cols(LW, HW, SUB)) / 4;  // vectors per int16 unit
  static constexpr size_t LOW_CH = size_t(COLS / (4 * FL));                       // low chunks per unit
  static constexpr size_t HIGH_CH = HW ? size_t(COLS / (4 * FH)) : 0;             // high chunks per unit
  static_assert(VPS % UV == 0, "an int16 unit never straddles two sub-blocks");
};

/// Code vector v of a unit from its planes (the chunks `lo`/`hi` that hold it).
template <int LW, int HW, int SUB, bool PAIRS, int VI>
LOWBIT_ALWAYS_INLINE inline typename V::C expand(const typename V::C& lo, const typename V::C& hi) noexcept {
  using K = Cfg<LW, HW, SUB, PAIRS>;
  if constexpr (LW == 8) {
    (void)hi;
    return lo;
  } else {
    const typename V::C l = V::template c_move<LW * (VI % K::FL), 0, LW>(lo);
    if constexpr (HW == 0) {
      (void)hi;
      return l;
    } else {
      return V::c_or(l, V::template c_move<HW * (VI % K::FH), LW, HW>(hi));
    }
  }
}

/// The sums of one unit (columns k0 .. k0 + COLS) for an MR x NB tile, added into A (and B).
template <int LW, int HW, int SUB, bool PAIRS, int MR, int NB>
LOWBIT_ALWAYS_INLINE inline void unit_int(const ::lowbit::detail::QuantizedActivations& a, Index m0,
                                          const BlockLayout& L, const uint8_t* const* rec, Index u, Index k0,
                                          typename V::I (&A)[MR][NB], typename V::I (&B)[MR][NB]) noexcept {
  using K = Cfg<LW, HW, SUB, PAIRS>;
  const int8_t* arow[MR];
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { arow[r] = a.row(m0 + r) + k0; });
  const bool nib = L.sc_store() == BlockLayout::Scales::nibbles, has_sc = L.sc_store() != BlockLayout::Scales::none;
  typename V::Sc sc[NB][K::SUBS];
  unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
    if constexpr (PAIRS) {
      if (has_sc) {
        V::sc_load_pairs(rec[b] + L.sc_offset() + size_t(u) * 32, nib, sc[b][0], sc[b][1]);
      } else {
        sc[b][0] = V::sc_unit();
        sc[b][1] = V::sc_unit();
      }
    } else {
      sc[b][0] = V::sc_unit();
    }
  });
  const uint8_t* lo_p[NB];
  const uint8_t* hi_p[NB];
  unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
    lo_p[b] = rec[b] + size_t(u) * K::LOW_CH * 64;
    hi_p[b] = rec[b] + L.high_offset() + size_t(u) * K::HIGH_CH * 64;
  });
  if constexpr (LW == 8) {
    // 8-bit codes: int32 sums per sub-block (V's dot8), minus zero * sum c, times sc.
    const int zeff = L.zero() - V::w8_bias;
    const int16_t* cs[MR];
    unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { cs[r] = a.sub_sums.data() + (m0 + r) * a.sub_stride + k0 / SUB; });
    typename V::Acc acc[MR][NB];
    unroll<K::NV>([&](auto vc) LOWBIT_ALWAYS_INLINE {
      constexpr int vi = decltype(vc)::value;
      if constexpr (vi % K::VPS == 0)
        unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { acc[r][b] = V::zero(); }); });
      typename V::W wv[NB];
      unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { wv[b] = V::load8(lo_p[b] + vi * 64); });
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const auto av = V::bcast(arow[r] + 4 * vi);
        unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { V::dot8(acc[r][b], wv[b], av); });
      });
      if constexpr ((vi + 1) % K::VPS == 0) {
        constexpr int q = vi / K::VPS;
        unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
          const auto z = V::set_i(zeff * int32_t(cs[r][q]));
          unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
            const auto d = V::sub(V::finish(acc[r][b]), z);
            A[r][b] = V::add(A[r][b], has_sc ? V::mul(d, V::sc_i(sc[b][q])) : d);
          });
        });
      }
    });
  } else {
    const bool zc = L.zero() != 0;
    const int32_t* zp[MR];
    unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
      zp[r] = zc ? a.zpairs.data() + (m0 + r) * a.unit_stride + k0 / (4 * K::UV) : nullptr;
    });
    typename V::Sub sub[MR][NB];
    typename V::C lo[NB], hi[NB];
    unroll<K::NV>([&](auto vc) LOWBIT_ALWAYS_INLINE {
      constexpr int vi = decltype(vc)::value;
      if constexpr (vi % K::UV == 0)
        unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { sub[r][b] = V::sub_zero(); }); });
      typename V::C code[NB];
      unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
        if constexpr (vi % K::FL == 0) lo[b] = V::c_load(lo_p[b] + (vi / K::FL) * 64);
        if constexpr (HW != 0 && vi % K::FH == 0) hi[b] = V::c_load(hi_p[b] + (vi / K::FH) * 64);
        code[b] = expand<LW, HW, SUB, PAIRS, vi>(lo[b], hi[b]);
      });
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const auto av = V::bcast(arow[r] + 4 * vi);
        unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { V::sub_dot(sub[r][b], code[b], av); });
      });
      if constexpr ((vi + 1) % K::UV == 0) {
        constexpr int q = vi / K::VPS, unit = vi / K::UV;
        unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
          if (zc) {
            const auto z = V::z_load(zp[r][unit]);
            unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { V::fold_z(A[r][b], sub[r][b], z, sc[b][q]); });
          } else {
            unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { V::fold(A[r][b], sub[r][b], sc[b][q]); });
          }
        });
      }
    });
  }
  if constexpr (PAIRS) {
    if (L.mn_store() != BlockLayout::Scales::none) {
      unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
        const auto pr = V::mn_load_pairs(rec[b] + (nib ? L.sc_offset() : L.mn_offset()) + size_t(u) * 32, nib);
        unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
          V::fold_pairs(B[r][b], a.sub_sums.data() + (m0 + r) * a.sub_stride + k0 / SUB, pr);
        });
      });
    }
  }
}

template <int LW, int HW, int SUB, bool PAIRS, int MR, int NB>
void tile_int(const ::lowbit::detail::QuantizedActivations& a, Index m0, const BlockLayout& L, Index b0, float* y,
              Index ldy, Index n1) noexcept {
  using K = Cfg<LW, HW, SUB, PAIRS>;
  const Index S = L.super_block(), units = S / K::COLS;
  const bool offset = L.offset(), mnv = L.mn_store() != BlockLayout::Scales::none, asym = a.asymmetric,
             pg = a.per_group;
  alignas(64) float t[MR][NB][16];
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { V::store(t[r][b], V::zero_f()); }); });
  for (Index s = 0; s < L.supers(); ++s) {
    const uint8_t* rec[NB];
    unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { rec[b] = L.record(b0 + b, s); });
    typename V::I A[MR][NB], B[MR][NB];
    unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
      unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
        A[r][b] = V::set_i(0);
        B[r][b] = V::set_i(0);
      });
    });
    for (Index u = 0; u < units; ++u) unit_int<LW, HW, SUB, PAIRS, MR, NB>(a, m0, L, rec, u, s * S + u * K::COLS, A, B);
    // The super-block's float steps: t = fma(float(A), d, t), t = fma(float(B), m, t).
    unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
      const auto dv = V::load_half(rec[b] + L.d_offset());
      const auto mv = offset ? V::load_half(rec[b] + L.m_offset()) : V::zero_f();
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const Index m = m0 + r;
        auto Ai = A[r][b];
        const int32_t za = a.zero[size_t(m)];
        if (asym) Ai = V::sub(Ai, V::mul(V::set_i(za), V::load_i(L.wsums(b0 + b, s))));
        const auto sa = V::set_f(pg ? a.row_scale(m, s) : 1.0f);
        auto tv = V::fma(V::to_f(Ai), pg ? V::mul(dv, sa) : dv, V::load_s32(t[r][b]));
        if (offset) {
          typename V::F bf;
          if (mnv) {
            auto Bi = B[r][b];
            if (asym) Bi = V::sub(Bi, V::mul(V::set_i(za), V::load_i(L.msums(b0 + b, s))));
            bf = V::to_f(Bi);
          } else {
            bf = V::set_f(float(a.group_sum(m, s) - za * int32_t(S)));
          }
          tv = V::fma(bf, pg ? V::mul(mv, sa) : mv, tv);
        }
        V::store(t[r][b], tv);
      });
    });
  }
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
    unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
      const auto tv = V::load_s32(t[r][b]);
      const auto v = pg ? tv : V::mul(tv, V::set_f(a.row_scale(m0 + r, 0)));
      const Index n = (b0 + b) * 16;
      float* dst = y + (m0 + r) * ldy + n;
      if (n + 16 <= n1) {
        V::store(dst, v);
      } else {
        alignas(64) float tmp[16];
        V::store(tmp, v);
        for (Index i = 0; i < n1 - n; ++i) dst[i] = tmp[i];
      }
    });
  });
}

/// Float activations: per sub-block p = sum x * (u - zero) in column order, then
/// t = fma(p, d * sc, t) and, with offset, t = fma(xs, m * mn, t) (xs: the row's sub-block sums).
/// A unit's codes are expanded to bytes once (the integer path's expand), then the columns run
/// in a plain loop: this path has one fma per weight and row whatever the layout.
template <int LW, int HW, int SUB, bool PAIRS, int MR, int NB>
void tile_f32(const float* x, Index ldx, const float* xs, Index xs_stride, Index m0, const BlockLayout& L, Index b0,
              float* y, Index ldy, Index n1) noexcept {
  using K = Cfg<LW, HW, SUB, PAIRS>;
  const Index S = L.super_block(), units = S / K::COLS;
  const bool offset = L.offset(), nib = L.sc_store() == BlockLayout::Scales::nibbles,
             has_sc = L.sc_store() != BlockLayout::Scales::none, mnv = L.mn_store() != BlockLayout::Scales::none;
  const auto zf = V::set_f(float(L.zero()));
  alignas(64) float t[MR][NB][16];
  alignas(64) uint8_t codes[NB][K::NV][64];
  alignas(64) float dsc[NB][K::SUBS][16], dmn[NB][K::SUBS][16];
  for (int r = 0; r < MR; ++r)
    for (int b = 0; b < NB; ++b) V::store(t[r][b], V::zero_f());
  for (Index s = 0; s < L.supers(); ++s) {
    for (Index u = 0; u < units; ++u) {
      const Index k0 = s * S + u * K::COLS;
      for (int b = 0; b < NB; ++b) {
        const uint8_t* rec = L.record(b0 + b, s);
        const auto dv = V::load_half(rec + L.d_offset());
        const auto mv = offset ? V::load_half(rec + L.m_offset()) : V::zero_f();
        typename V::Sc sc[2] = {V::sc_unit(), V::sc_unit()};
        if (PAIRS && has_sc) V::sc_load_pairs(rec + L.sc_offset() + size_t(u) * 32, nib, sc[0], sc[1]);
        typename V::I mn[2] = {V::set_i(1), V::set_i(1)};
        if (PAIRS && offset && mnv)
          V::pr_split(V::mn_load_pairs(rec + (nib ? L.sc_offset() : L.mn_offset()) + size_t(u) * 32, nib), mn[0], mn[1]);
        for (int q = 0; q < K::SUBS; ++q) {
          V::store(dsc[b][q], has_sc ? V::mul(dv, V::to_f(V::sc_i(sc[q]))) : dv);
          V::store(dmn[b][q], mnv ? V::mul(mv, V::to_f(mn[q])) : mv);
        }
        const uint8_t* lo_p = rec + size_t(u) * K::LOW_CH * 64;
        const uint8_t* hi_p = rec + L.high_offset() + size_t(u) * K::HIGH_CH * 64;
        typename V::C lo{}, hi{};
        unroll<K::NV>([&](auto vc) LOWBIT_ALWAYS_INLINE {
          constexpr int vi = decltype(vc)::value;
          if constexpr (vi % K::FL == 0) lo = V::c_load(lo_p + (vi / K::FL) * 64);
          if constexpr (HW != 0 && vi % K::FH == 0) hi = V::c_load(hi_p + (vi / K::FH) * 64);
          V::c_store(codes[b][vi], expand<LW, HW, SUB, PAIRS, vi>(lo, hi));
        });
      }
      for (int q = 0; q < K::SUBS; ++q) {
        typename V::F p[MR][NB];
        for (int r = 0; r < MR; ++r)
          for (int b = 0; b < NB; ++b) p[r][b] = V::zero_f();
        for (int v = q * K::VPS; v < (q + 1) * K::VPS; ++v) {
          typename V::R raw[NB];
          for (int b = 0; b < NB; ++b) raw[b] = V::load_raw(codes[b][v]);
          for (int j = 0; j < 4; ++j) {
            typename V::F wf[NB];
            for (int b = 0; b < NB; ++b) wf[b] = V::sub(V::code_f(raw[b], j, false), zf);
            for (int r = 0; r < MR; ++r) {
              const auto xv = V::set_f(x[(m0 + r) * ldx + k0 + 4 * v + j]);
              for (int b = 0; b < NB; ++b) p[r][b] = V::fma(xv, wf[b], p[r][b]);
            }
          }
        }
        for (int r = 0; r < MR; ++r) {
          const float xsum = offset ? xs[(m0 + r) * xs_stride + k0 / SUB + q] : 0.0f;
          for (int b = 0; b < NB; ++b) {
            auto tv = V::fma(p[r][b], V::load_s32(dsc[b][q]), V::load_s32(t[r][b]));
            if (offset) tv = V::fma(V::set_f(xsum), V::load_s32(dmn[b][q]), tv);
            V::store(t[r][b], tv);
          }
        }
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int b = 0; b < NB; ++b) {
      const Index n = (b0 + b) * 16;
      float* dst = y + (m0 + r) * ldy + n;
      const Index count = std::min<Index>(16, n1 - n);
      for (Index i = 0; i < count; ++i) dst[i] = t[r][b][i];
    }
}

/// Panels of NB blocks; within a panel, tiles of MR rows, the last rows of M one at a time.
/// [n0, n1) starts on a block boundary.
template <int LW, int HW, int SUB, bool PAIRS, int MR, int NB>
void run_int(const ::lowbit::detail::QuantizedActivations& a, const BlockLayout& L, float* y, Index ldy, Index n0,
             Index n1) noexcept {
  const Index b1 = (n1 + 15) / 16, mfull = a.rows / MR * MR;
  Index b = n0 / 16;
  for (; b + NB <= b1; b += NB) {
    for (Index m = 0; m < mfull; m += MR) tile_int<LW, HW, SUB, PAIRS, MR, NB>(a, m, L, b, y, ldy, n1);
    for (Index m = mfull; m < a.rows; ++m) tile_int<LW, HW, SUB, PAIRS, 1, NB>(a, m, L, b, y, ldy, n1);
  }
  for (; b < b1; ++b) {
    for (Index m = 0; m < mfull; m += MR) tile_int<LW, HW, SUB, PAIRS, MR, 1>(a, m, L, b, y, ldy, n1);
    for (Index m = mfull; m < a.rows; ++m) tile_int<LW, HW, SUB, PAIRS, 1, 1>(a, m, L, b, y, ldy, n1);
  }
}

template <int LW, int HW, int SUB, bool PAIRS>
void run_int_kind(const ::lowbit::detail::QuantizedActivations& a, const BlockLayout& L, float* y, Index ldy,
                  Index n0, Index n1) noexcept {
  if (a.rows < V::blk_mr)
    run_int<LW, HW, SUB, PAIRS, 1, V::blk_gemv_nb>(a, L, y, ldy, n0, n1);
  else
    run_int<LW, HW, SUB, PAIRS, V::blk_mr, V::blk_nb>(a, L, y, ldy, n0, n1);
}

template <int LW, int HW, int SUB, bool PAIRS>
void run_f32_kind(const float* x, Index M, Index ldx, const float* xs, Index xs_stride, const BlockLayout& L,
                  float* y, Index ldy, Index n0, Index n1) noexcept {
  constexpr int MR = V::blkf_mr, NB = V::blkf_nb;
  const Index b1 = (n1 + 15) / 16, mfull = M / MR * MR;
  Index b = n0 / 16;
  for (; b + NB <= b1; b += NB) {
    for (Index m = 0; m < mfull; m += MR) tile_f32<LW, HW, SUB, PAIRS, MR, NB>(x, ldx, xs, xs_stride, m, L, b, y, ldy, n1);
    for (Index m = mfull; m < M; ++m) tile_f32<LW, HW, SUB, PAIRS, 1, NB>(x, ldx, xs, xs_stride, m, L, b, y, ldy, n1);
  }
  for (; b < b1; ++b) {
    for (Index m = 0; m < mfull; m += MR) tile_f32<LW, HW, SUB, PAIRS, MR, 1>(x, ldx, xs, xs_stride, m, L, b, y, ldy, n1);
    for (Index m = mfull; m < M; ++m) tile_f32<LW, HW, SUB, PAIRS, 1, 1>(x, ldx, xs, xs_stride, m, L, b, y, ldy, n1);
  }
}

/// Calls f(lw, hw, sub, pairs) (integral constants) for the kind of L: one of the eight kinds
/// (planes, sub-block, pairs) that pack_weights produces (see BlockLayout).
template <class Fn>
void with_kind(const BlockLayout& L, Fn&& f) noexcept {
  using I0 = std::integral_constant<int, 0>;
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I4 = std::integral_constant<int, 4>;
  using I8 = std::integral_constant<int, 8>;
  using S16 = std::integral_constant<int, 16>;
  using S32 = std::integral_constant<int, 32>;
  switch (L.kind()) {
    case BlockLayout::Kind::b8: f(I8{}, I0{}, S32{}, std::false_type{}); break;
    case BlockLayout::Kind::b4: f(I4{}, I0{}, S32{}, std::false_type{}); break;
    case BlockLayout::Kind::b5: f(I4{}, I1{}, S32{}, std::false_type{}); break;
    case BlockLayout::Kind::b2_s16: f(I2{}, I0{}, S16{}, std::true_type{}); break;
    case BlockLayout::Kind::b3_s16: f(I2{}, I1{}, S16{}, std::true_type{}); break;
    case BlockLayout::Kind::b4_s32: f(I4{}, I0{}, S32{}, std::true_type{}); break;
    case BlockLayout::Kind::b5_s32: f(I4{}, I1{}, S32{}, std::true_type{}); break;
    case BlockLayout::Kind::b6_s16: f(I4{}, I2{}, S16{}, std::true_type{}); break;
  }
}

}  // namespace blk

inline void linear_block_int(const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w, float* y,
                             Index ldy, Index n0, Index n1) noexcept {
  const BlockLayout& L = w.block();
  blk::with_kind(L, [&](auto lw, auto hw, auto sub, auto pairs) {
    blk::run_int_kind<decltype(lw)::value, decltype(hw)::value, decltype(sub)::value, decltype(pairs)::value>(
        a, L, y, ldy, n0, n1);
  });
}

/// xs: [M][K / sub_block] sums of x per sub-block (offset formats; may be null otherwise).
inline void linear_block_f32(const float* x, Index M, Index ldx, const float* xs, const PackedWeights& w, float* y,
                             Index ldy, Index n0, Index n1) noexcept {
  const BlockLayout& L = w.block();
  const Index xs_stride = L.cols() / L.sub_block();
  blk::with_kind(L, [&](auto lw, auto hw, auto sub, auto pairs) {
    blk::run_f32_kind<decltype(lw)::value, decltype(hw)::value, decltype(sub)::value, decltype(pairs)::value>(
        x, M, ldx, xs, xs_stride, L, y, ldy, n0, n1);
  });
}
