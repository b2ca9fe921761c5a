// format_params.hpp: the stored parameters of one block of a GGUF format, chosen by a clipping
// (γ) search weighted per weight: the parameter choice the format-grid algorithms share.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/formats/block.hpp>
#include <lowbit/formats/format.hpp>

#include <cmath>
#include <vector>

namespace lowbit::ptq {

/// Options of the clipping search that chooses a block's stored parameters on a format's grid.
struct FormatClipOptions {
  float gamma_min = 0.5f;  ///< smallest clipping factor γ tried, in (0, 1]
  /// Grid points γ ∈ {1, ..., gamma_min}, evenly spaced (>= 1); 1 point is the plain rounding's
  /// parameters (min-max with offsets, the signed abs-max rule without).
  int steps = 21;
  /// Formats with sub-blocks (the K-quants): once d (and dmin) are fixed by fit(), search every
  /// sub-block again on the format's integer grid (fit_sub_block), as llama.cpp's quantizers do.
  bool refine = true;
};

namespace detail {

inline void validate(const FormatClipOptions& o) {
  lowbit::detail::require(std::isfinite(o.gamma_min) && o.gamma_min > 0.0f && o.gamma_min <= 1.0f,
                          "options.clip.gamma_min: expected a value in (0, 1], got {}", o.gamma_min);
  lowbit::detail::require(o.steps >= 1, "options.clip.steps: expected >= 1, got {}", o.steps);
}

/// The γ grid of `o`, 1 first (so ties keep the plain parameters).
inline std::vector<float> clip_grid(const FormatClipOptions& o) {
  std::vector<float> g(size_t(o.steps), 1.0f);
  for (int k = 1; k < o.steps; ++k)
    g[size_t(k)] = 1.0f - (1.0f - o.gamma_min) * float(k) / float(o.steps - 1);
  return g;
}

/// Σ w_i (x_i − x̂_i)² over n values (w null: all 1) with x̂ the value of the code nearest x_i
/// under the effective parameters s. Uniform grids round in plain float arithmetic (within one
/// float rounding of the exact nearest code: for ranking candidates); the IQ4 level grids use the
/// exact nearest level.
inline double approx_error(const formats::Format& f, const float* x, const float* w, int n,
                           const formats::SubBlockParams& s) {
  double e = 0;
  if (f.levels != nullptr) {
    const formats::detail::NearestCode round(
        s, formats::detail::CodeSet{f.qmin, f.qmax, f.levels, f.n_levels}, f.has_offset, n);
    for (int i = 0; i < n; ++i) {
      const double d = double(x[i]) - double(formats::decode_value(s, round(x[i]), f.has_offset));
      e += (w ? double(w[i]) : 1.0) * d * d;
    }
    return e;
  }
  const float off = f.has_offset ? s.offset : 0.0f;
  if (!(s.scale > 0) && !(s.scale < 0)) {  // every code decodes to the offset
    for (int i = 0; i < n; ++i) {
      const double d = double(x[i]) - double(off);
      e += (w ? double(w[i]) : 1.0) * d * d;
    }
    return e;
  }
  const float inv = 1.0f / s.scale, lo = float(f.qmin), hi = float(f.qmax);
  for (int i = 0; i < n; ++i) {
    float t = (x[i] - off) * inv;
    t = t < hi ? t : hi;
    t = t > lo ? t : lo;
    const float q = (t + 12582912.0f) - 12582912.0f;  // round to the nearest integer (1.5 * 2^23)
    const float d = x[i] - (s.scale * q + off);
    e += (w ? double(w[i]) : 1.0) * double(d) * double(d);
  }
  return e;
}

/// The stored parameters of one block (f.block_size values x, weights w >= 0 per value, null =
/// all 1) from a clipping search on the grid `gammas` (1 first):
/// - one sub-block (legacy formats, IQ4_NL): the γ whose fitted parameters (fp16 d, m) give the
///   least weighted error;
/// - sub-blocks (K-quants, IQ4_XS): per sub-block the γ whose own float parameters give the least
///   weighted error, fit() of those (d, dmin and the integer sub-block values), then with
///   `refine` every sub-block again on the integer grid of the fixed d, dmin (fit_sub_block).
/// Only strict improvements count, so with gammas = {1} this is the plain rounding's choice.
inline formats::BlockParams search_block_params(const formats::Format& f, const float* x,
                                                const float* w, const std::vector<float>& gammas,
                                                bool refine) {
  const int nsub = f.sub_blocks(), len = f.sub_block;
  if (nsub == 1) {
    formats::SubBlockParams want = f.wanted_params(x, len, gammas[0]);
    formats::BlockParams best_p = f.fit(&want);
    if (gammas.size() == 1) return best_p;
    double best = approx_error(f, x, w, len, f.sub_block_params(best_p, 0));
    for (size_t k = 1; k < gammas.size(); ++k) {
      want = f.wanted_params(x, len, gammas[k]);
      const formats::BlockParams p = f.fit(&want);
      const double e = approx_error(f, x, w, len, f.sub_block_params(p, 0));
      if (e < best) {
        best = e;
        best_p = p;
      }
    }
    return best_p;
  }
  formats::SubBlockParams chosen[16];
  for (int j = 0; j < nsub; ++j) {
    const float* xj = x + j * len;
    const float* wj = w ? w + j * len : nullptr;
    chosen[j] = f.wanted_params(xj, len, gammas[0]);
    if (gammas.size() == 1) continue;
    double best = approx_error(f, xj, wj, len, chosen[j]);
    for (size_t k = 1; k < gammas.size(); ++k) {
      const formats::SubBlockParams s = f.wanted_params(xj, len, gammas[k]);
      const double e = approx_error(f, xj, wj, len, s);
      if (e < best) {
        best = e;
        chosen[j] = s;
      }
    }
  }
  formats::BlockParams p = f.fit(chosen);
  if (!refine || gammas.size() == 1) return p;
  for (int j = 0; j < nsub; ++j) {
    const float* xj = x + j * len;
    const float* wj = w ? w + j * len : nullptr;
    formats::BlockParams best_p = p;
    double best = approx_error(f, xj, wj, len, f.sub_block_params(p, j));
    for (const float gamma : gammas) {
      formats::BlockParams q = p;
      f.fit_sub_block(q, j, f.wanted_params(xj, len, gamma));
      const double e = approx_error(f, xj, wj, len, f.sub_block_params(q, j));
      if (e < best) {
        best = e;
        best_p = q;
      }
    }
    p = best_p;
  }
  return p;
}

/// The codes of one block under stored parameters p: each x its exactly nearest code under the
/// sub-block's effective parameters (formats' NearestCode, as encode_block rounds).
inline void nearest_codes(const formats::Format& f, const float* x, const formats::BlockParams& p,
                          int8_t* codes) {
  const formats::detail::CodeSet set{f.qmin, f.qmax, f.levels, f.n_levels};
  for (int j = 0; j < f.sub_blocks(); ++j) {
    const formats::detail::NearestCode round(f.sub_block_params(p, j), set, f.has_offset,
                                             f.sub_block);
    for (int i = j * f.sub_block; i < (j + 1) * f.sub_block; ++i) codes[i] = int8_t(round(x[i]));
  }
}

}  // namespace detail
}  // namespace lowbit::ptq
