// rounding.hpp: the grids' shared fit rules and the reference rounding of one block that every
// codec's quantize() uses (min-max / abs-max, or an importance-weighted clipping search).
#pragma once

#include <lowbit/formats/block.hpp>

#include <cmath>
#include <cstdint>

namespace lowbit::formats::detail {

// ---- fit rules --------------------------------------------------------------------------------

/// Legacy formats (one scale per block): d, and m when the format has one, are the nearest fp16 of
/// the wanted scale and offset (fit_half: ties to even, saturating at ±65504, NaN -> 0).
inline BlockParams fit_legacy(const SubBlockParams& w, bool has_offset) noexcept {
  BlockParams p;
  p.d = fit_half(w.scale);
  p.m = has_offset ? fit_half(w.offset) : uint16_t(0);
  return p;
}

/// K-quants with unsigned sub-block scales and mins (Q2_K: hi = 15, Q4_K/Q5_K: hi = 63): given
/// the fp16 d and dmin in `p`, sub-block j gets the scale in [0, hi] with float(d) * scale nearest
/// the wanted scale and the min in [0, hi] with float(dmin) * min nearest -offset (the format can
/// only subtract: a wanted offset > 0 gets min 0).
inline void fit_unsigned_sub_block(BlockParams& p, int j, const SubBlockParams& w,
                                   int hi) noexcept {
  p.scales[size_t(j)] = int16_t(nearest_multiple(w.scale, half_to_float(p.d), 0, hi));
  p.mins[size_t(j)] = int16_t(nearest_multiple(-w.offset, half_to_float(p.m), 0, hi));
}

/// d = fp16(largest wanted scale / hi), dmin = fp16(largest wanted -offset / hi) (negative and NaN
/// wishes count as 0), so the largest sub-block values sit at the top of the integer grid; then
/// every sub-block as fit_unsigned_sub_block.
inline BlockParams fit_unsigned_super_block(const SubBlockParams* w, int n, int hi) noexcept {
  float smax = 0, mmax = 0;
  for (int j = 0; j < n; ++j) {
    if (w[j].scale > smax) smax = w[j].scale;
    if (-w[j].offset > mmax) mmax = -w[j].offset;
  }
  BlockParams p;
  p.d = fit_half(smax / float(hi));
  p.m = fit_half(mmax / float(hi));
  for (int j = 0; j < n; ++j) fit_unsigned_sub_block(p, j, w[j], hi);
  return p;
}

/// K-quants with signed sub-block scales in [lo, hi] (Q3_K: -32..31, Q6_K: -128..127): the scale
/// whose float(d) * scale is nearest the wanted one.
inline void fit_signed_sub_block(BlockParams& p, int j, const SubBlockParams& w, int lo,
                                 int hi) noexcept {
  p.scales[size_t(j)] = int16_t(nearest_multiple(w.scale, half_to_float(p.d), lo, hi));
}

/// d = fp16(S / lo) with S the wanted scale of largest magnitude (the first of equals), so S gets
/// the sub-block scale lo exactly as ggml's reference maps it (d is negative when S > 0); then
/// every sub-block as fit_signed_sub_block.
inline BlockParams fit_signed_super_block(const SubBlockParams* w, int n, int lo, int hi) noexcept {
  float big = 0;
  for (int j = 0; j < n; ++j)
    if (std::fabs(w[j].scale) > std::fabs(big)) big = w[j].scale;
  BlockParams p;
  p.d = fit_half(big / float(lo));
  for (int j = 0; j < n; ++j) fit_signed_sub_block(p, j, w[j], lo, hi);
  return p;
}

// ---- reference rounding -----------------------------------------------------------------------

/// The parameters a plain rounding wants for the `n` values x, their range clipped by `gamma`
/// (1 = no clipping).
/// - With offsets: lo = min x, hi = max x (lo raised to at most 0 first when the format can only
///   subtract a min); clipping shrinks [lo, hi] about its centre by gamma (keeping lo <= 0 where
///   needed); scale = (hi - lo) / qmax, offset = lo.
/// - Without: m = the value of largest magnitude (the first of equals); scale = gamma * m / e with
///   e = F::extreme_code, the code ggml's reference gives m (Q8_0 uses |m| / 127 instead).
template <class F>
SubBlockParams wanted_params(const float* x, int n, float gamma) noexcept {
  SubBlockParams s;
  if constexpr (F::has_offset) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; ++i) {
      if (x[i] < lo) lo = x[i];
      if (x[i] > hi) hi = x[i];
    }
    if (F::nonpositive_offset && lo > 0) lo = 0;
    if (gamma != 1.0f) {
      float a = 0.5f * lo, b = 0.5f * hi;
      round_here(a);  // every product rounded: the same result with and without fma contraction
      round_here(b);
      const float c = a + b, r = b - a;
      float g = gamma * r;
      round_here(g);
      lo = c - g;
      hi = c + g;
      if (F::nonpositive_offset && lo > 0) lo = 0;
    }
    s.scale = (hi - lo) / float(F::qmax);
    s.offset = lo;
  } else {
    float m = 0, amax = 0;
    for (int i = 0; i < n; ++i)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        m = x[i];
      }
    s.scale = gamma * (F::extreme_code > 0 ? amax : m) / F::extreme_code;
  }
  return s;
}

/// Codes of one sub-block: the nearest code of each value under `s`.
template <class F>
void encode_sub_block(const float* x, int n, const SubBlockParams& s, int8_t* codes) noexcept {
  const NearestCode round(s, code_set<F>(), F::has_offset, n);
  for (int i = 0; i < n; ++i) codes[i] = int8_t(round(x[i]));
}

/// Σ w_i (x_i - x̂_i)² of one sub-block rounded to its nearest codes under `s` (w = 1 if null).
/// The sum stops early once it reaches `limit` (the terms are >= 0, so the result is >= limit
/// then): a search that keeps strict improvements only decides exactly as with the full sum.
template <class F>
double sub_block_error(const float* x, const float* w, int n, const SubBlockParams& s,
                       double limit = HUGE_VAL) noexcept {
  double e = 0;
  const NearestCode round(s, code_set<F>(), F::has_offset, n);
  for (int i = 0; i < n && e < limit; ++i) {
    const int q = round(x[i]);
    const double d = double(x[i]) - double(decode_value(s, q, F::has_offset));
    double t = (w ? double(w[i]) : 1.0) * d * d;
    round_here(t);
    e += t;
  }
  return e;
}

/// Rounds the block x to its nearest codes under `p` and packs it.
template <class F>
void encode_params(const float* x, const BlockParams& p, uint8_t* block) noexcept {
  int8_t codes[F::block_size];
  for (int j = 0; j < F::block_size / F::sub_block; ++j)
    encode_sub_block<F>(x + j * F::sub_block, F::sub_block, F::sub_block_params(p, j),
                        codes + j * F::sub_block);
  F::pack(p, codes, block);
}

/// The clipping factors the importance search tries, from 1 (no clipping) down to 0.5.
inline constexpr int kGammaSteps = 21;
inline float gamma_step(int k) noexcept { return 1.0f - 0.025f * float(k); }

/// The reference rounding of one block (what F::quantize does).
/// Without importance: the wanted parameters of each sub-block (wanted_params, gamma 1), F::fit,
/// nearest codes.
/// With importance w (per-element weights >= 0): per sub-block, the clipping factor gamma in
/// 1, 0.975, ..., 0.5 minimising Σ w (x - x̂)²: K-quants first on the sub-block's own float
/// parameters (to fix d and dmin through F::fit), then again on the format's actual grid with d
/// and dmin fixed (F::fit_sub_block snaps each candidate to the integer sub-block grid); legacy
/// formats on their fp16 grid directly. Strict improvements only (ties keep the larger gamma),
/// and the plain result is kept when it is better overall, so the weighted error never exceeds
/// that of the plain rounding. Deterministic: no randomness, a fixed evaluation order.
template <class F>
void reference_quantize(const float* x, const float* w, uint8_t* block) noexcept {
  constexpr int nsub = F::block_size / F::sub_block, len = F::sub_block;
  SubBlockParams plain[nsub];
  for (int j = 0; j < nsub; ++j) plain[j] = wanted_params<F>(x + j * len, len, 1.0f);
  const BlockParams p0 = F::fit(plain);
  if (!w) {
    encode_params<F>(x, p0, block);
    return;
  }
  BlockParams p = p0;
  if (nsub > 1) {  // stage 1: clipping on each sub-block's float parameters fixes d and dmin
    SubBlockParams chosen[nsub];
    for (int j = 0; j < nsub; ++j) {
      const float* xj = x + j * len;
      const float* wj = w + j * len;
      chosen[j] = plain[j];
      double best = sub_block_error<F>(xj, wj, len, plain[j]);
      for (int k = 1; k < kGammaSteps; ++k) {
        const SubBlockParams s = wanted_params<F>(xj, len, gamma_step(k));
        const double e = sub_block_error<F>(xj, wj, len, s, best);
        if (e < best) {
          best = e;
          chosen[j] = s;
        }
      }
    }
    p = F::fit(chosen);
  }
  // Stage 2: the same search on the format's grid, the super-block values fixed.
  double total = 0, total0 = 0;
  for (int j = 0; j < nsub; ++j) {
    const float* xj = x + j * len;
    const float* wj = w + j * len;
    BlockParams best_p = p;
    double best = -1;
    for (int k = 0; k < kGammaSteps; ++k) {
      BlockParams q = p;
      F::fit_sub_block(q, j, wanted_params<F>(xj, len, gamma_step(k)));
      const double e =
          sub_block_error<F>(xj, wj, len, F::sub_block_params(q, j), best < 0 ? HUGE_VAL : best);
      if (best < 0 || e < best) {
        best = e;
        best_p = q;
      }
    }
    p = best_p;
    total += best;
    total0 += sub_block_error<F>(xj, wj, len, F::sub_block_params(p0, j));
  }
  encode_params<F>(x, total0 < total ? p0 : p, block);
}

}  // namespace lowbit::formats::detail
