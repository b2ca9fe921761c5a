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

template <int MR, int NB>
void tile_int(const detail::QuantizedActivations& a, Index m0, const PackedWeights& w, Index b0,
              float* y, Index ldy, Index n1) noexcept {
  const int8_t* arow[MR];
  for (int r = 0; r < MR; ++r) arow[r] = a.row(m0 + r);
  const bool nib = w.nibbles(), asym_w = !w.symmetric(), asym_a = a.asymmetric, pg = a.per_group;
  const Index ck = w.chunk_k(), G = w.groups();
  typename V::F t[MR][NB];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NB; ++j) t[r][j] = V::zero_f();
  for (Index g = 0; g < G; ++g) {
    const Index c0 = w.group_begin(g) / ck, c1 = (w.group_end(g) + ck - 1) / ck;
    typename V::Acc acc[MR][NB];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NB; ++j) acc[r][j] = V::zero();
    if (nib) {
      for (Index c = c0; c < c1; ++c) {
        typename V::W lo[NB], hi[NB];
        for (int j = 0; j < NB; ++j) V::load4(w.chunk(b0 + j, c), lo[j], hi[j]);
        for (int r = 0; r < MR; ++r) {
          const auto alo = V::bcast(arow[r] + c * 8), ahi = V::bcast(arow[r] + c * 8 + 4);
          for (int j = 0; j < NB; ++j) {
            V::dot4(acc[r][j], lo[j], alo);
            V::dot4(acc[r][j], hi[j], ahi);
          }
        }
      }
    } else {
      for (Index c = c0; c < c1; ++c) {
        typename V::W wv[NB];
        for (int j = 0; j < NB; ++j) wv[j] = V::load8(w.chunk(b0 + j, c));
        for (int r = 0; r < MR; ++r) {
          const auto av = V::bcast(arow[r] + c * 4);
          for (int j = 0; j < NB; ++j) V::dot8(acc[r][j], wv[j], av);
        }
      }
    }
    // D = sum c*u - zw * sum c - za * wsum, then t = fma(float(D), scale, t).
    const int bias = nib ? 0 : V::w8_bias;
    for (int j = 0; j < NB; ++j) {
      const Index blk = b0 + j;
      const auto zw = asym_w ? V::sub(V::load_zw(w.zero_points(blk) + g * 16), V::set_i(bias))
                             : V::set_i(w.zero_const() - bias);
      const auto sw = w.half_scales() ? V::load_s16(w.scales16(blk) + g * 16) : V::load_s32(w.scales32(blk) + g * 16);
      for (int r = 0; r < MR; ++r) {
        auto d = V::sub(V::finish(acc[r][j]), V::mul(zw, V::set_i(a.group_sum(m0 + r, g))));
        if (asym_a) d = V::sub(d, V::mul(V::set_i(a.zero[size_t(m0 + r)]), V::load_i(w.wsums(blk) + g * 16)));
        const auto s = pg ? V::mul(sw, V::set_f(a.row_scale(m0 + r, g))) : sw;
        t[r][j] = V::fma(V::to_f(d), s, t[r][j]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NB; ++j) {
      const auto v = pg ? t[r][j] : V::mul(t[r][j], V::set_f(a.row_scale(m0 + r, 0)));
      const Index n = (b0 + j) * 16;
      float* dst = y + (m0 + r) * ldy + n;
      if (n + 16 <= n1) {
        V::store(dst, v);
      } else {
        alignas(64) float tmp[16];
        V::store(tmp, v);
        for (Index i = 0; i < n1 - n; ++i) dst[i] = tmp[i];
      }
    }
}

template <int MR, int NB>
void tile_f32(const float* x, Index ldx, Index m0, const PackedWeights& w, Index b0, float* y,
              Index ldy, Index n1) noexcept {
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = x + (m0 + r) * ldx;
  const bool nib = w.nibbles(), asym_w = !w.symmetric();
  const Index ck = w.chunk_k(), G = w.groups();
  typename V::F t[MR][NB];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NB; ++j) t[r][j] = V::zero_f();
  for (Index g = 0; g < G; ++g) {
    const Index k0 = w.group_begin(g), k1 = w.group_end(g);
    typename V::F zw[NB], p[MR][NB];
    for (int j = 0; j < NB; ++j)
      zw[j] = V::to_f(asym_w ? V::load_zw(w.zero_points(b0 + j) + g * 16) : V::set_i(w.zero_const()));
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NB; ++j) p[r][j] = V::zero_f();
    for (Index kc = k0; kc < k1; kc += ck) {
      typename V::R raw[NB];
      for (int j = 0; j < NB; ++j) raw[j] = V::load_raw(w.chunk(b0 + j, kc / ck));
      const int kn = int(std::min(ck, k1 - kc));  // padding columns never enter the sums
      for (int q = 0; q < kn; ++q) {
        typename V::F wf[NB];
        for (int j = 0; j < NB; ++j) wf[j] = V::sub(V::code_f(raw[j], q, nib), zw[j]);
        for (int r = 0; r < MR; ++r) {
          const auto xv = V::set_f(xr[r][kc + q]);
          for (int j = 0; j < NB; ++j) p[r][j] = V::fma(xv, wf[j], p[r][j]);
        }
      }
    }
    for (int j = 0; j < NB; ++j) {
      const Index blk = b0 + j;
      const auto sw = w.half_scales() ? V::load_s16(w.scales16(blk) + g * 16) : V::load_s32(w.scales32(blk) + g * 16);
      for (int r = 0; r < MR; ++r) t[r][j] = V::fma(p[r][j], sw, t[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NB; ++j) {
      const Index n = (b0 + j) * 16;
      float* dst = y + (m0 + r) * ldy + n;
      if (n + 16 <= n1) {
        V::store(dst, t[r][j]);
      } else {
        alignas(64) float tmp[16];
        V::store(tmp, t[r][j]);
        for (Index i = 0; i < n1 - n; ++i) dst[i] = tmp[i];
      }
    }
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
void run_int(const detail::QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy,
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

inline void linear_int(const detail::QuantizedActivations& a, const PackedWeights& w, float* y, Index ldy,
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
