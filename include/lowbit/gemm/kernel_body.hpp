// kernel_body.hpp: the blocked GEMM/GEMV driver shared by every Isa, written against a vector type V.
// Deliberately without #pragma once: each kernels_<isa>.hpp includes it inside its own namespace
// and compiler target region (after defining struct V), so the same loops compile once per Isa
// (as highway's foreach_target does). It computes exactly what kernels::reference defines.
//
// V's contract (one "block" = 16 output channels; see PackedWeights for the chunk layout):
//   Acc zero(); W load8(p); void load4(p, W& lo, W& hi); A bcast(const int8_t* 4 bytes);
//   void dot8(Acc&, const W&, A) / dot4(...): lane i += sum_j w[4i + j] * a[j] for codes < 256 / < 16;
//   I finish(const Acc&); int w8_bias (what load8 subtracted from u); I ops set_i, load_zw(16 bytes),
//   load_i, sub, mul; F ops zero_f, set_f, to_f, load_s16, load_s32, mul, fma(a, b, c) = a * b + c
//   rounded once, sub, store; R load_raw(p); F code_f(const R&, int j, bool nibbles).

/// Calls f(std::integral_constant<int, i>) for i = 0..N-1: register tiles need constant indices
/// early (before GCC's scalar replacement of aggregates), or their arrays stay in memory.
template <class Fn, int... I>
LOWBIT_ALWAYS_INLINE inline void unroll_seq(Fn&& f, std::integer_sequence<int, I...>) noexcept {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class Fn>
LOWBIT_ALWAYS_INLINE inline void unroll(Fn&& f) noexcept {
  unroll_seq(f, std::make_integer_sequence<int, N>{});
}

/// sum_k c * u over chunks [c0, c1) for an MR x NB tile, stored to out. Kept out of line: inside
/// the group loop GCC's register allocator spills the accumulator tile in the hot loop.
template <int MR, int NB>
LOWBIT_ALWAYS_INLINE inline void dot_chunks_body(const int8_t* const* arow, const uint8_t* const* wb, Index c0,
                                                 Index c1, bool nib, int32_t (*out)[NB][16]) noexcept {
  typename V::Acc acc[MR][NB];
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { acc[r][j] = V::zero(); }); });
  if (nib) {
    for (Index c = c0; c < c1; ++c) {
      typename V::W lo[NB], hi[NB];
      unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { V::load4(wb[j] + c * 64, lo[j], hi[j]); });
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const auto alo = V::bcast(arow[r] + c * 8), ahi = V::bcast(arow[r] + c * 8 + 4);
        unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE {
          V::dot4(acc[r][j], lo[j], alo);
          V::dot4(acc[r][j], hi[j], ahi);
        });
      });
    }
  } else {
    for (Index c = c0; c < c1; ++c) {
      typename V::W wv[NB];
      unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { wv[j] = V::load8(wb[j] + c * 64); });
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const auto av = V::bcast(arow[r] + c * 4);
        unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { V::dot8(acc[r][j], wv[j], av); });
      });
    }
  }
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
    unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { V::store_i(out[r][j], V::finish(acc[r][j])); });
  });
}

template <int MR, int NB>
__attribute__((noinline)) void dot_chunks_call(const int8_t* const* arow, const uint8_t* const* wb, Index c0,
                                               Index c1, bool nib, int32_t (*out)[NB][16]) noexcept {
  dot_chunks_body<MR, NB>(arow, wb, c0, c1, nib, out);
}

/// Small tiles (GEMV) stay inline: no call per group; large ones go out of line (see above).
template <int MR, int NB>
LOWBIT_ALWAYS_INLINE inline void dot_chunks(const int8_t* const* arow, const uint8_t* const* wb, Index c0, Index c1,
                                            bool nib, int32_t (*out)[NB][16]) noexcept {
  if constexpr (MR * NB <= 4)
    dot_chunks_body<MR, NB>(arow, wb, c0, c1, nib, out);
  else
    dot_chunks_call<MR, NB>(arow, wb, c0, c1, nib, out);
}

template <int MR, int NB>
void tile_int(const ::lowbit::detail::QuantizedActivations& a, Index m0, const PackedWeights& w, Index b0,
              float* y, Index ldy, Index n1) noexcept {
  const int8_t* arow[MR];
  for (int r = 0; r < MR; ++r) arow[r] = a.row(m0 + r);
  const uint8_t* wb[NB];
  for (int j = 0; j < NB; ++j) wb[j] = w.block_codes(b0 + j);
  const bool nib = w.nibbles(), asym_w = !w.symmetric(), asym_a = a.asymmetric, pg = a.per_group;
  const Index ck = w.chunk_k(), G = w.groups();
  alignas(64) float t[MR][NB][16];  // float sums across groups
  alignas(64) int32_t acc[MR][NB][16];
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { V::store(t[r][j], V::zero_f()); }); });
  for (Index g = 0; g < G; ++g) {
    const Index c0 = w.group_begin(g) / ck, c1 = (w.group_end(g) + ck - 1) / ck;
    dot_chunks<MR, NB>(arow, wb, c0, c1, nib, acc);
    // D = sum c*u - zw * sum c - za * wsum, then t = fma(float(D), scale, t).
    const int bias = nib ? 0 : V::w8_bias, zconst = w.zero_const() - bias;
    unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE {
      const Index blk = b0 + j;
      const auto zw = asym_w ? V::sub(V::load_zw(w.zero_points(blk) + g * 16), V::set_i(bias)) : V::set_i(0);
      const auto sw = w.half_scales() ? V::load_s16(w.scales16(blk) + g * 16) : V::load_s32(w.scales32(blk) + g * 16);
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const int32_t sq = a.group_sum(m0 + r, g);
        auto d = V::sub(V::load_i(acc[r][j]), asym_w ? V::mul(zw, V::set_i(sq)) : V::set_i(zconst * sq));
        if (asym_a) d = V::sub(d, V::mul(V::set_i(a.zero[size_t(m0 + r)]), V::load_i(w.wsums(blk) + g * 16)));
        const auto s = pg ? V::mul(sw, V::set_f(a.row_scale(m0 + r, g))) : sw;
        V::store(t[r][j], V::fma(V::to_f(d), s, V::load_s32(t[r][j])));
      });
    });
  }
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
    unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE {
      const auto tv = V::load_s32(t[r][j]);
      const auto v = pg ? tv : V::mul(tv, V::set_f(a.row_scale(m0 + r, 0)));
      const Index n = (b0 + j) * 16;
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

/// p = sum over k in [k0, k1) of x[r][k] * (u - zw), in k order (one fma per k), stored to out.
/// Out of line for the same reason as dot_chunks.
template <int MR, int NB>
__attribute__((noinline)) void fma_columns(const float* const* xr, const uint8_t* const* wb, const float (*zwf)[16],
                                           Index k0, Index k1, Index ck, bool nib, float (*out)[NB][16]) noexcept {
  typename V::F zw[NB], p[MR][NB];
  unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { zw[j] = V::load_s32(zwf[j]); });
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { p[r][j] = V::zero_f(); }); });
  for (Index kc = k0; kc < k1; kc += ck) {
    typename V::R raw[NB];
    unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { raw[j] = V::load_raw(wb[j] + (kc / ck) * 64); });
    const int kn = int(std::min(ck, k1 - kc));  // padding columns never enter the sums
    for (int q = 0; q < kn; ++q) {
      typename V::F wf[NB];
      unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { wf[j] = V::sub(V::code_f(raw[j], q, nib), zw[j]); });
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        const auto xv = V::set_f(xr[r][kc + q]);
        unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { p[r][j] = V::fma(xv, wf[j], p[r][j]); });
      });
    }
  }
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { V::store(out[r][j], p[r][j]); }); });
}

template <int MR, int NB>
void tile_f32(const float* x, Index ldx, Index m0, const PackedWeights& w, Index b0, float* y,
              Index ldy, Index n1) noexcept {
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = x + (m0 + r) * ldx;
  const uint8_t* wb[NB];
  for (int j = 0; j < NB; ++j) wb[j] = w.block_codes(b0 + j);
  const bool nib = w.nibbles(), asym_w = !w.symmetric();
  const Index ck = w.chunk_k(), G = w.groups();
  alignas(64) float t[MR][NB][16], p[MR][NB][16], zw[NB][16];
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE { unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE { V::store(t[r][j], V::zero_f()); }); });
  for (Index g = 0; g < G; ++g) {
    unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE {
      V::store(zw[j], V::to_f(asym_w ? V::load_zw(w.zero_points(b0 + j) + g * 16) : V::set_i(w.zero_const())));
    });
    fma_columns<MR, NB>(xr, wb, zw, w.group_begin(g), w.group_end(g), ck, nib, p);
    unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE {
      const Index blk = b0 + j;
      const auto sw = w.half_scales() ? V::load_s16(w.scales16(blk) + g * 16) : V::load_s32(w.scales32(blk) + g * 16);
      unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
        V::store(t[r][j], V::fma(V::load_s32(p[r][j]), sw, V::load_s32(t[r][j])));
      });
    });
  }
  unroll<MR>([&](auto r) LOWBIT_ALWAYS_INLINE {
    unroll<NB>([&](auto j) LOWBIT_ALWAYS_INLINE {
      const Index n = (b0 + j) * 16;
      float* dst = y + (m0 + r) * ldy + n;
      const Index count = std::min<Index>(16, n1 - n);
      for (Index i = 0; i < count; ++i) dst[i] = t[r][j][i];
    });
  });
}

/// Runs a tile with MR rows, or fewer for the last rows of M.
template <int MR, int NB, bool Int, class... Args>
void tile_rows(Index rows, Args&&... args) noexcept {
  if constexpr (MR > 1) {
    if (rows < MR) return tile_rows<MR - 1, NB, Int>(rows, args...);
  }
  (void)rows;
  if constexpr (Int)
    tile_int<MR, NB>(args...);
  else
    tile_f32<MR, NB>(args...);
}

/// Panels of NB blocks (64 channels for NB = 4) in order; within a panel, tiles of MR rows reuse
/// the panel's weights from cache. The N range [n0, n1) starts on a block boundary.
template <int MR, int NB>
void run_int(const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy,
             Index n0, Index n1) noexcept {
  const Index b1 = (n1 + 15) / 16;
  Index b = n0 / 16;
  for (; b + NB <= b1; b += NB)
    for (Index m = 0; m < a.rows; m += MR) tile_rows<MR, NB, true>(std::min<Index>(MR, a.rows - m), a, m, w, b, y, ldy, n1);
  for (; b < b1; ++b)
    for (Index m = 0; m < a.rows; m += MR) tile_rows<MR, 1, true>(std::min<Index>(MR, a.rows - m), a, m, w, b, y, ldy, n1);
}

template <int MR, int NB>
void run_f32(const float* x, Index M, Index ldx, const PackedWeights& w, float* y, Index ldy, Index n0,
             Index n1) noexcept {
  const Index b1 = (n1 + 15) / 16;
  Index b = n0 / 16;
  for (; b + NB <= b1; b += NB)
    for (Index m = 0; m < M; m += MR) tile_rows<MR, NB, false>(std::min<Index>(MR, M - m), x, ldx, m, w, b, y, ldy, n1);
  for (; b < b1; ++b)
    for (Index m = 0; m < M; m += MR) tile_rows<MR, 1, false>(std::min<Index>(MR, M - m), x, ldx, m, w, b, y, ldy, n1);
}

inline void quantize(const float* x, Index M, Index K, Index ldx, const PackedWeights& w, ActivationQuant mode,
                     ::lowbit::detail::QuantizedActivations& a) {
  ::lowbit::detail::quantize_activations_with<V>(x, M, K, ldx, w, mode, a);
}

inline void linear_int(const ::lowbit::detail::QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy,
                       Index n0, Index n1) noexcept {
  if (w.groups() > 1 || w.nibbles())
    run_int<V::grouped_mr, V::grouped_nb>(a, w, y, ldy, n0, n1);
  else
    run_int<V::int_mr, V::int_nb>(a, w, y, ldy, n0, n1);
}

inline void linear_f32(const float* x, Index M, Index ldx, const PackedWeights& w, float* y, Index ldy,
                       Index n0, Index n1) noexcept {
  run_f32<V::f32_mr, V::f32_nb>(x, M, ldx, w, y, ldy, n0, n1);
}
