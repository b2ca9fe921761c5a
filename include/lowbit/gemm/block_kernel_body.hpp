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
//                 lane i += sum_j c[4i + j] * a[j] (codes < 64; AVX2 keeps them as int16 pairs)
//   blk_wide_sub  true when Sub, Z and Sc are I (int32 lanes, e.g. VNNI's vpdpbusd): a partial sum
//                 then spans a whole sub-block, and each fold its units' Z summed
//   Z z_load(int32 zpair)                    the unit's zero * sum c, from QuantizedActivations::zpairs
//   Sc sc_unit(); sc_load_pairs(p, nibbles, Sc& s0, Sc& s1)   per-lane sub-scales of a sub-block pair
//   Pr mn_load_pairs(p, nibbles)             per-lane sub-min pair
//   sc_mn_load_pairs(p, nibbles, mn_offset, Sc& s0, Sc& s1, Pr&)  both (one load for nibbles)
//   fold(I& acc, Sub, Sc): acc += sum * sc;  fold_z(I& acc, Sub, Z, Sc): acc += (sum - z) * sc
//   fold_pairs(I& acc, const int16_t* cs, Pr): acc += mn_0 * cs[0] + mn_1 * cs[1]
//   I sc_i(Sc); pr_split(Pr, I&, I&);
//   F load_half(const uint8_t* 16 halves, exact for every finite half); I add(I, I)
//   void c_store(uint8_t* p, C); constants blk_mr, blk_nb (integer tiles), blk_gemv_nb (M < blk_mr),
//   blkf_mr, blkf_nb (float32 tiles).
// Integer sums are exact in every representation (the bounds are in BlockLayout::unit_cols and
// BlockWeights' validation), so each Isa is free in how it forms them; the float steps are the
// reference's, in its order.

#ifndef LOWBIT_BLK_PREFETCH
#define LOWBIT_BLK_PREFETCH 1024
#endif

namespace blk {

/// A template flag that is 0, 1 or decided at run time (RT), so that the vector kernels compile
/// one configuration per GGUF format while the portable kernels cover every configuration.
constexpr int RT = 2;
template <int Flag>
LOWBIT_ALWAYS_INLINE inline bool flag(bool runtime) noexcept {
  if constexpr (Flag == RT)
    return runtime;
  else
    return Flag != 0;
}

/// Compile-time shape of one kind of block weights: plane widths, sub-block, pairs of sub-scales.
/// The driver unrolls one *group* of COLS columns (BlockLayout::group_cols: a sub-block pair, or
/// 32 columns without sub-scales): every chunk, sub-block and int16 unit boundary inside it is a
/// constant.
template <int LW, int HW, int SUB, bool PAIRS>
struct Cfg {
  static constexpr int FL = 8 / LW;                  // fields per byte of the low plane
  static constexpr int FH = HW ? 8 / HW : 1;         // ... of the high plane
  static constexpr int SUBS = PAIRS ? 2 : 1;         // sub-blocks per group
  static constexpr int COLS = SUB * SUBS;            // 32 or 64
  static constexpr int NV = COLS / 4;                // code vectors (4 columns x 16 lanes) per group
  static constexpr int VPS = SUB / 4;                // vectors per sub-block
  static constexpr int UV = int(::lowbit::detail::block_unit_cols(LW, HW, SUB)) / 4;  // vectors per int16 unit
  static_assert(VPS % UV == 0, "an int16 unit never straddles two sub-blocks");
  // Prefetched lines per group: its planes, its sub-scale pair and one more (the record's tail).
  static constexpr int PF_LINES = (COLS * (LW + HW) / 32 * 64 + 64) / 64 + 1;
};

/// Code vector VI of a group from its planes (the chunks `lo`/`hi` that hold it).
template <int LW, int HW, int VI>
LOWBIT_ALWAYS_INLINE inline typename V::C expand(const typename V::C& lo, const typename V::C& hi) noexcept {
  if constexpr (LW == 8) {
    (void)hi;
    return lo;
  } else {
    const typename V::C l = V::template c_move<LW * (VI % (8 / LW)), 0, LW>(lo);
    if constexpr (HW == 0) {
      (void)hi;
      return l;
    } else {
      return V::c_or(l, V::template c_move<HW * (VI % (8 / HW)), LW, HW>(hi));
    }
  }
}

/// The sums A += sum_j sc_j * sum_{k in j} c_k * (u_k - zero) of one group (columns k0 .. k0 +
/// COLS; `grp` the group of each block) for an MR x NB tile.
/// Row pointers of an MR-row tile into the activation codes and their block sums.
template <int MR>
struct Rows {
  const int8_t* c[MR];    // codes
  const int16_t* cs[MR];  // sub-block sums
  const int32_t* zp[MR];  // zero pairs (or null)
};

template <int LW, int HW, int SUB, bool PAIRS, int NIB, int ZC, int OFF, int MR, int NB>
LOWBIT_ALWAYS_INLINE inline void group_int(const Rows<MR>& rows, const BlockLayout& L, const uint8_t* const* grp,
                                           Index k0, typename V::I (&A)[MR][NB], typename V::I (&B)[MR][NB]) noexcept {
  using K = Cfg<LW, HW, SUB, PAIRS>;
  const int8_t* arow[MR];
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { arow[r] = rows.c[r] + k0; });
  const bool nib = flag<NIB>(L.sc_store() == BlockLayout::Scales::nibbles);
  typename V::Sc sc[NB][K::SUBS];
  const bool mins = PAIRS && flag<OFF>(L.offset());
  unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
    if constexpr (PAIRS) {
      // B += mn_0 * sum c + mn_1 * sum c of the pair (offset formats).
      if (mins) {
        typename V::Pr pr;
        V::sc_mn_load_pairs(grp[b], nib, L.mn_offset(), sc[b][0], sc[b][1], pr);
        unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
          V::fold_pairs(B[r][b], rows.cs[r] + k0 / SUB, pr);
        });
      } else {
        V::sc_load_pairs(grp[b], nib, sc[b][0], sc[b][1]);
      }
    } else {
      sc[b][0] = V::sc_unit();
    }
  });
  if constexpr (LW == 8) {
    // 8-bit codes: int32 sums per sub-block (V's dot8), minus zero * sum c, times sc.
    const int zeff = L.zero() - V::w8_bias;
    const int16_t* cs[MR];
    unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { cs[r] = rows.cs[r] + k0 / SUB; });
    typename V::Acc acc[MR][NB];
    unroll<K::NV>([&](auto vc) LOWBIT_ALWAYS_INLINE {
      constexpr int vi = decltype(vc)::value;
      if constexpr (vi % K::VPS == 0)
        unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { acc[r][b] = V::zero(); }); });
      typename V::W wv[NB];
      unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { wv[b] = V::load8(grp[b] + L.low_offset() + vi * 64); });
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
            A[r][b] = V::add(A[r][b], PAIRS ? V::mul(d, V::sc_i(sc[b][q])) : d);
          });
        });
      }
    });
  } else {
    const bool zc = flag<ZC>(L.zero() != 0);
    const int32_t* zp[MR];
    unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { zp[r] = zc ? rows.zp[r] + k0 / (4 * K::UV) : nullptr; });
    // The vectors one partial sum spans before it is folded: an int16 unit, or a whole sub-block
    // where V's partial sums are int32 (the sub-scale multiply then runs once per sub-block).
    constexpr int FV = V::blk_wide_sub ? K::VPS : K::UV;
    typename V::Sub sub[MR][NB];
    typename V::C lo[NB], hi[NB];
    unroll<K::NV>([&](auto vc) LOWBIT_ALWAYS_INLINE {
      constexpr int vi = decltype(vc)::value;
      typename V::C code[NB];
      unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
        if constexpr (vi % K::FL == 0) lo[b] = V::c_load(grp[b] + L.low_offset() + (vi / K::FL) * 64);
        if constexpr (HW != 0 && vi % K::FH == 0) hi[b] = V::c_load(grp[b] + L.high_offset() + (vi / K::FH) * 64);
        code[b] = expand<LW, HW, vi>(lo[b], hi[b]);
      });
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const auto av = V::bcast(arow[r] + 4 * vi);
        unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
          if constexpr (vi % FV == 0)
            sub[r][b] = V::sub_first(code[b], av);
          else
            V::sub_dot(sub[r][b], code[b], av);
        });
      });
      if constexpr ((vi + 1) % FV == 0) {
        constexpr int q = vi / K::VPS, unit = (vi + 1 - FV) / K::UV, units = FV / K::UV;
        unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
          if (zc) {
            auto z = V::z_load(zp[r][unit]);
            if constexpr (units > 1)  // blk_wide_sub: Z is I
              unroll<units - 1>([&](auto u) LOWBIT_ALWAYS_INLINE {
                z = V::add(z, V::z_load(zp[r][unit + 1 + decltype(u)::value]));
              });
            unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
              if constexpr (V::blk_wide_sub && !PAIRS)
                A[r][b] = V::add(A[r][b], V::sub(sub[r][b], z));  // no sub-scale: skip the multiply by 1
              else
                V::fold_z(A[r][b], sub[r][b], z, sc[b][q]);
            });
          } else {
            unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
              if constexpr (V::blk_wide_sub && !PAIRS)
                A[r][b] = V::add(A[r][b], sub[r][b]);
              else
                V::fold(A[r][b], sub[r][b], sc[b][q]);
            });
          }
        });
      }
    });
  }
}

template <int LW, int HW, int SUB, bool PAIRS, int NIB, int ZC, int OFF, int GPS, int MR, int NB>
void tile_int(const ::lowbit::detail::QuantizedActivations& a, Index m0, const BlockLayout& L, Index b0, float* y,
              Index ldy, Index n1) noexcept {
  using K = Cfg<LW, HW, SUB, PAIRS>;
  // GPS: groups per super-block when constant (GGUF: 1 for the legacy formats, 4 or 8 for K-quants).
  const Index S = L.super_block(), groups = GPS ? GPS : S / K::COLS;
  const size_t gb = L.group_bytes();
  const bool offset = flag<OFF>(L.offset()), asym = a.asymmetric, pg = a.per_group;
  Rows<MR> rows;
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
    rows.c[r] = a.row(m0 + r);
    rows.cs[r] = a.sub_sums.data() + (m0 + r) * a.sub_stride;
    rows.zp[r] = a.zpairs.empty() ? nullptr : a.zpairs.data() + (m0 + r) * a.unit_stride;
  });
  typename V::F t[MR][NB];
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { t[r][b] = V::zero_f(); }); });
  for (Index s = 0; s < L.supers(); ++s) {
    const uint8_t* rec[NB];
    unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { rec[b] = L.record(b0 + b, s); });
    typename V::I A[MR][NB], B[MR][NB];
    unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
      unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE { A[r][b] = B[r][b] = V::set_i(0); });
    });
    for (Index g = 0; g < groups; ++g) {
      const uint8_t* grp[NB];
      unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
        grp[b] = rec[b] + size_t(g) * gb;
        // Software prefetch a fixed distance ahead in each block's stream (a block's records
        // follow each other): the hardware prefetcher alone leaves cold GEMV below the streaming
        // rate. One line per 64 bytes of the group, plus one for the record's tail; prefetches
        // never fault, so running past the end is harmless.
        if constexpr (LOWBIT_BLK_PREFETCH > 0)
          unroll<K::PF_LINES>([&](auto i) LOWBIT_ALWAYS_INLINE {
            __builtin_prefetch(grp[b] + LOWBIT_BLK_PREFETCH + 64 * decltype(i)::value);
          });
      });
      group_int<LW, HW, SUB, PAIRS, NIB, ZC, OFF, MR, NB>(rows, L, grp, s * S + g * K::COLS, A, B);
    }
    // The super-block's float steps: t = fma(float(A), d, t), t = fma(float(B), m, t), with
    // B = sum_j mn_j * sum c (kinds with sub-blocks) or sum c (legacy).
    unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
      const auto dv = V::load_half(rec[b] + L.d_offset());
      const auto mv = offset ? V::load_half(rec[b] + L.m_offset()) : V::zero_f();
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const Index m = m0 + r;
        auto Ai = A[r][b];
        const int32_t za = a.zero[size_t(m)];
        if (asym) Ai = V::sub(Ai, V::mul(V::set_i(za), V::load_i(L.wsums(b0 + b, s))));
        const auto sa = V::set_f(pg ? a.row_scale(m, s) : 1.0f);
        t[r][b] = V::fma(V::to_f(Ai), pg ? V::mul(dv, sa) : dv, t[r][b]);
        if (offset) {
          typename V::F bf;
          if (PAIRS) {
            auto Bi = B[r][b];
            if (asym) Bi = V::sub(Bi, V::mul(V::set_i(za), V::load_i(L.msums(b0 + b, s))));
            bf = V::to_f(Bi);
          } else {
            bf = V::set_f(float(a.group_sum(m, s) - za * int32_t(S)));
          }
          t[r][b] = V::fma(bf, pg ? V::mul(mv, sa) : mv, t[r][b]);
        }
      });
    });
  }
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
    unroll<NB>([&](auto b) LOWBIT_ALWAYS_INLINE {
      const auto v = pg ? t[r][b] : V::mul(t[r][b], V::set_f(a.row_scale(m0 + r, 0)));
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
/// A group's codes are expanded to bytes once (the integer path's expand), then the columns run
/// in a plain loop: this path has one fma per weight and row whatever the layout.
template <int LW, int HW, int SUB, bool PAIRS, int MR, int NB>
void tile_f32(const float* x, Index ldx, const float* xs, Index xs_stride, Index m0, const BlockLayout& L, Index b0,
              float* y, Index ldy, Index n1) noexcept {
  using K = Cfg<LW, HW, SUB, PAIRS>;
  const Index S = L.super_block(), groups = S / K::COLS;
  const bool offset = L.offset(), nib = L.sc_store() == BlockLayout::Scales::nibbles;
  const auto zf = V::set_f(float(L.zero()));
  alignas(64) float t[MR][NB][16];
  alignas(64) uint8_t codes[NB][K::NV][64];
  alignas(64) float dsc[NB][K::SUBS][16], dmn[NB][K::SUBS][16];
  for (int r = 0; r < MR; ++r)
    for (int b = 0; b < NB; ++b) V::store(t[r][b], V::zero_f());
  for (Index s = 0; s < L.supers(); ++s) {
    for (Index g = 0; g < groups; ++g) {
      const Index k0 = s * S + g * K::COLS;
      for (int b = 0; b < NB; ++b) {
        const uint8_t* rec = L.record(b0 + b, s);
        const uint8_t* grp = rec + size_t(g) * L.group_bytes();
        const auto dv = V::load_half(rec + L.d_offset());
        const auto mv = offset ? V::load_half(rec + L.m_offset()) : V::zero_f();
        typename V::Sc sc[2] = {V::sc_unit(), V::sc_unit()};
        typename V::I mn[2] = {V::set_i(1), V::set_i(1)};
        if (PAIRS) {
          V::sc_load_pairs(grp, nib, sc[0], sc[1]);
          if (offset) V::pr_split(V::mn_load_pairs(grp + (nib ? 0 : L.mn_offset()), nib), mn[0], mn[1]);
        }
        for (int q = 0; q < K::SUBS; ++q) {
          V::store(dsc[b][q], PAIRS ? V::mul(dv, V::to_f(V::sc_i(sc[q]))) : dv);
          V::store(dmn[b][q], PAIRS ? V::mul(mv, V::to_f(mn[q])) : mv);
        }
        typename V::C lo{}, hi{};
        unroll<K::NV>([&](auto vc) LOWBIT_ALWAYS_INLINE {
          constexpr int vi = decltype(vc)::value;
          if constexpr (vi % K::FL == 0) lo = V::c_load(grp + L.low_offset() + (vi / K::FL) * 64);
          if constexpr (HW != 0 && vi % K::FH == 0) hi = V::c_load(grp + L.high_offset() + (vi / K::FH) * 64);
          V::c_store(codes[b][vi], expand<LW, HW, vi>(lo, hi));
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
template <int LW, int HW, int SUB, bool PAIRS, int NIB, int ZC, int OFF, int GPS, int MR, int NB>
void run_int(const ::lowbit::detail::QuantizedActivations& a, const BlockLayout& L, float* y, Index ldy, Index n0,
             Index n1) noexcept {
  const Index b1 = (n1 + 15) / 16, mfull = a.rows / MR * MR;
  Index b = n0 / 16;
  for (; b + NB <= b1; b += NB) {
    for (Index m = 0; m < mfull; m += MR) tile_int<LW, HW, SUB, PAIRS, NIB, ZC, OFF, GPS, MR, NB>(a, m, L, b, y, ldy, n1);
    for (Index m = mfull; m < a.rows; ++m) tile_int<LW, HW, SUB, PAIRS, NIB, ZC, OFF, GPS, 1, NB>(a, m, L, b, y, ldy, n1);
  }
  for (; b < b1; ++b) {
    for (Index m = 0; m < mfull; m += MR) tile_int<LW, HW, SUB, PAIRS, NIB, ZC, OFF, GPS, MR, 1>(a, m, L, b, y, ldy, n1);
    for (Index m = mfull; m < a.rows; ++m) tile_int<LW, HW, SUB, PAIRS, NIB, ZC, OFF, GPS, 1, 1>(a, m, L, b, y, ldy, n1);
  }
}

template <int LW, int HW, int SUB, bool PAIRS, int NIB, int ZC, int OFF, int GPS>
void run_int_kind(const ::lowbit::detail::QuantizedActivations& a, const BlockLayout& L, float* y, Index ldy,
                  Index n0, Index n1) noexcept {
  if (a.rows < V::blk_mr)
    run_int<LW, HW, SUB, PAIRS, NIB, ZC, OFF, GPS, 1, V::blk_gemv_nb>(a, L, y, ldy, n0, n1);
  else
    run_int<LW, HW, SUB, PAIRS, NIB, ZC, OFF, GPS, V::blk_mr, V::blk_nb>(a, L, y, ldy, n0, n1);
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

template <int V_>
using IC = std::integral_constant<int, V_>;

/// Calls f(lw, hw, sub, pairs) (integral constants) for the kind of L.
template <class Fn>
void with_kind(const BlockLayout& L, Fn&& f) noexcept {
  using Kd = BlockLayout::Kind;
  switch (L.kind()) {
    case Kd::b8: f(IC<8>{}, IC<0>{}, IC<32>{}, std::false_type{}); break;
    case Kd::b4: f(IC<4>{}, IC<0>{}, IC<32>{}, std::false_type{}); break;
    case Kd::b5: f(IC<4>{}, IC<1>{}, IC<32>{}, std::false_type{}); break;
    case Kd::b2_s16: f(IC<2>{}, IC<0>{}, IC<16>{}, std::true_type{}); break;
    case Kd::b3_s16: f(IC<2>{}, IC<1>{}, IC<16>{}, std::true_type{}); break;
    case Kd::b4_s32: f(IC<4>{}, IC<0>{}, IC<32>{}, std::true_type{}); break;
    case Kd::b5_s32: f(IC<4>{}, IC<1>{}, IC<32>{}, std::true_type{}); break;
    case Kd::b6_s16: f(IC<4>{}, IC<2>{}, IC<16>{}, std::true_type{}); break;
  }
}

/// The configurations the vector kernels compile: those of GGUF's formats (super-blocks of 32
/// without sub-scales, of 256 with; for the kinds with sub-blocks: Q2_K with offset and nibbles,
/// Q4_K/Q5_K with offset and zero 0, Q3_K/Q6_K with zero and no offset). The portable path (V::blk_all_configs) covers every configuration.
inline bool covers(const BlockLayout& L) noexcept {
  if constexpr (V::blk_all_configs) {
    (void)L;
    return true;
  } else {
    const bool z = L.zero() != 0, off = L.offset(), nib = L.sc_store() == BlockLayout::Scales::nibbles;
    if (L.super_block() != (L.pairs() ? 256 : 32)) return false;
    switch (L.kind()) {
      case BlockLayout::Kind::b2_s16: return !z && off && nib;
      case BlockLayout::Kind::b3_s16: case BlockLayout::Kind::b6_s16: return z && !off;
      case BlockLayout::Kind::b4_s32: case BlockLayout::Kind::b5_s32: return !z && off;
      default: return true;
    }
  }
}

/// The integer kernel for L: with V::blk_all_configs (the portable path) one kernel per kind,
/// its flags decided at run time; otherwise the configuration of L's GGUF format, all flags
/// constant (gguf_config). Returns false when L is none of them (dispatch then runs the portable
/// kernels).
inline bool run_int_config(const ::lowbit::detail::QuantizedActivations& a, const BlockLayout& L, float* y,
                           Index ldy, Index n0, Index n1) noexcept {
  if constexpr (V::blk_all_configs) {
    with_kind(L, [&](auto lw, auto hw, auto sub, auto pairs) {
      run_int_kind<decltype(lw)::value, decltype(hw)::value, decltype(sub)::value, decltype(pairs)::value, RT, RT, RT, 0>(
          a, L, y, ldy, n0, n1);
    });
    return true;
  } else {
    if (!covers(L)) return false;
    using Kd = BlockLayout::Kind;
    const bool z = L.zero() != 0;
    switch (L.kind()) {
      case Kd::b8: run_int_kind<8, 0, 32, false, 0, RT, RT, 1>(a, L, y, ldy, n0, n1); break;  // Q8_0
      case Kd::b4:  // Q4_0 (zero 8), Q4_1 (zero 0, offset)
        z ? run_int_kind<4, 0, 32, false, 0, 1, RT, 1>(a, L, y, ldy, n0, n1)
          : run_int_kind<4, 0, 32, false, 0, 0, RT, 1>(a, L, y, ldy, n0, n1);
        break;
      case Kd::b5:  // Q5_0, Q5_1
        z ? run_int_kind<4, 1, 32, false, 0, 1, RT, 1>(a, L, y, ldy, n0, n1)
          : run_int_kind<4, 1, 32, false, 0, 0, RT, 1>(a, L, y, ldy, n0, n1);
        break;
      case Kd::b2_s16: run_int_kind<2, 0, 16, true, 1, 0, 1, 8>(a, L, y, ldy, n0, n1); break;  // Q2_K
      case Kd::b3_s16: run_int_kind<2, 1, 16, true, 0, 1, 0, 8>(a, L, y, ldy, n0, n1); break;  // Q3_K
      case Kd::b4_s32: run_int_kind<4, 0, 32, true, 0, 0, 1, 4>(a, L, y, ldy, n0, n1); break;  // Q4_K
      case Kd::b5_s32: run_int_kind<4, 1, 32, true, 0, 0, 1, 4>(a, L, y, ldy, n0, n1); break;  // Q5_K
      case Kd::b6_s16: run_int_kind<4, 2, 16, true, 0, 1, 0, 8>(a, L, y, ldy, n0, n1); break;  // Q6_K
    }
    return true;
  }
}

}  // namespace blk

/// True when this Isa's integer block kernels cover L (always for the portable path).
inline bool block_int_covers(const BlockLayout& L) noexcept { return blk::covers(L); }

inline void linear_block_int(const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w, float* y,
                             Index ldy, Index n0, Index n1) noexcept {
  (void)blk::run_int_config(a, w.block(), y, ldy, n0, n1);
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
