// format_fake_quant.hpp: fake quantization on the exact grid of a GGUF block format, its STE/LSQ
// backward (straight through the fp16 and sub-block-scale roundings), and the export as blocks.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/half.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/block.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/qat/format_params.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <vector>

namespace lowbit::qat {

/// Gradients of a loss through format_fake_quantize(x, params): with respect to x (the STE
/// mask) and to every learned value of `params` (same layout as its vectors; empty for plain
/// types, and grad_offset all 0 for formats without offsets).
struct FormatGrads {
  MatrixXfR grad_x;
  std::vector<float> grad_scale, grad_offset, grad_super_scale, grad_super_min;
};

namespace detail {

using lowbit::detail::require_finite;

/// x rounded to the plain storage type (F32: x itself).
inline float plain_round(formats::Type t, float x) noexcept {
  if (t == formats::Type::F16) return half_to_float(float_to_half(x));
  if (t == formats::Type::BF16) return bf16_to_float(float_to_bf16(x));
  return x;
}

/// Throws unless x is finite, `p` fits it, and (for F16/BF16) no value overflows the type.
inline void check_format_input(const Eigen::Ref<const MatrixXfR>& x, const FormatParams& p) {
  require_finite(x, "x");
  validate(p, x.rows(), x.cols());
  if (p.type == formats::Type::F16 || p.type == formats::Type::BF16)
    for (Index r = 0; r < x.rows(); ++r)
      for (Index c = 0; c < x.cols(); ++c)
        require(std::isfinite(plain_round(p.type, x(r, c))), "x({}, {}) = {} overflows {}", r, c,
                x(r, c), formats::to_string(p.type));
}

inline void check_format_grad(const Eigen::Ref<const MatrixXfR>& grad_y,
                              const Eigen::Ref<const MatrixXfR>& x) {
  require(grad_y.rows() == x.rows() && grad_y.cols() == x.cols(),
          "grad_y: expected shape {}x{} (as x), got {}x{}", x.rows(), x.cols(), grad_y.rows(),
          grad_y.cols());
  require_finite(grad_y, "grad_y");
}

/// Calls fn(k, r, c0, block_params) for every block k of row r starting at column c0.
template <class Fn>
void for_each_format_block(const FormatParams& p, Fn&& fn) {
  const formats::Format& f = *p.format();
  const Index per_row = p.cols / f.block_size;
  for (Index r = 0; r < p.rows; ++r)
    for (Index b = 0; b < per_row; ++b) {
      const Index k = r * per_row + b;
      fn(k, r, b * f.block_size, format_block_params(p, k));
    }
}

inline formats::detail::CodeSet code_set(const formats::Format& f) noexcept {
  return {f.qmin, f.qmax, nullptr, 0};
}

/// Codes of one block of `x` (row pointer at the block's first column): the nearest code of each
/// value on the effective grid of its sub-block, exactly as formats::encode_block chooses them.
inline void block_codes(const formats::Format& f, const formats::BlockParams& bp, const float* x,
                        int8_t* codes) noexcept {
  for (int j = 0; j < f.sub_blocks(); ++j) {
    const formats::detail::NearestCode round(f.sub_block_params(bp, j), code_set(f), f.has_offset,
                                             f.sub_block);
    for (int i = j * f.sub_block; i < (j + 1) * f.sub_block; ++i) codes[i] = int8_t(round(x[i]));
  }
}

/// The code a value at distance e = sign * (x - offset) from a zero scale is clamped to as the
/// scale leaves 0 with the sign of `sign`: qmax above, qmin below, 0 (in range) at the offset.
inline double code_at_zero_scale(double e, int qmin, int qmax) noexcept {
  return e > 0 ? double(qmax) : (e < 0 ? double(qmin) : 0.0);
}

/// The backward of one weight; `grads` null for the STE only.
inline void format_backward(const Eigen::Ref<const MatrixXfR>& grad_y,
                            const Eigen::Ref<const MatrixXfR>& x, const FormatParams& p,
                            float grad_factor, MatrixXfR& grad_x, FormatGrads* grads) {
  check_format_input(x, p);
  check_format_grad(grad_y, x);
  require(std::isfinite(grad_factor) && grad_factor > 0.0f,
          "grad_factor: expected a finite value > 0, got {}", grad_factor);
  const formats::Format* fp = p.format();
  if (!fp) {  // plain storage rounding: the identity, straight through
    grad_x = grad_y;
    if (grads) {
      grads->grad_scale.clear();
      grads->grad_offset.clear();
      grads->grad_super_scale.clear();
      grads->grad_super_min.clear();
    }
    return;
  }
  const formats::Format& f = *fp;
  const int ns = f.sub_blocks();
  std::vector<double> gs, go, gd, gm;
  if (grads) {
    gs.assign(p.scale.size(), 0.0);
    go.assign(p.scale.size(), 0.0);
    gd.assign(p.super_scale.size(), 0.0);
    gm.assign(p.super_min.size(), 0.0);
  }
  // grad_x may alias grad_y: each element is read before it is written.
  MatrixXfR gx(x.rows(), x.cols());
  int8_t codes[256];
  for_each_format_block(p, [&](Index k, Index r, Index c0, const formats::BlockParams& bp) {
    const float* xb = x.data() + r * x.outerStride() + c0;
    const float* gyb = grad_y.data() + r * grad_y.outerStride() + c0;
    float* gxb = gx.data() + r * gx.outerStride() + c0;
    block_codes(f, bp, xb, codes);
    for (int j = 0; j < ns; ++j) {
      const size_t idx = size_t(k) * size_t(ns) + size_t(j);
      const formats::SubBlockParams s = f.sub_block_params(bp, j);
      const double S = s.scale, O = f.has_offset ? double(s.offset) : 0.0;
      // The side a zero effective scale is approached from: the learned (wanted) scale's sign.
      const double side = p.scale[idx] < 0 ? -1.0 : 1.0;
      double g_eff_scale = 0, g_eff_offset = 0;  // d loss / d (effective scale, offset)
      for (int i = j * f.sub_block; i < (j + 1) * f.sub_block; ++i) {
        const double xv = xb[i], gy = gyb[i];
        bool inside;
        double dscale;  // d x_hat / d scale
        if (S == 0) {
          const double e = side * (xv - O);
          inside = e == 0;
          dscale = code_at_zero_scale(e, f.qmin, f.qmax);
        } else {
          const double t = (xv - O) / S, u = std::nearbyint(t);
          inside = u >= f.qmin && u <= f.qmax;
          dscale = inside ? double(codes[i]) - t : double(codes[i]);  // LSQ: q - x/s inside
        }
        gxb[i] = inside ? gyb[i] : 0.0f;
        g_eff_scale += gy * dscale;
        if (!inside) g_eff_offset += gy;  // clipped: x_hat = s * q_end + offset
      }
      if (!grads) continue;
      if (f.scale_hi == 0) {  // legacy: the fp16 rounding of d (and m) passes straight through
        gs[idx] += g_eff_scale;
        go[idx] += g_eff_offset;
        continue;
      }
      // K-quants: effective scale = d * sc with sc = nearest(scale / d) in [lo, hi]; straight
      // through the sub-scale rounding for `scale` and LSQ for d (the step of that rounding).
      const double d = half_to_float(bp.d), sc = bp.scales[size_t(j)];
      const double want = p.scale[idx];
      if (d == 0) {
        const double d_side = p.super_scale[size_t(k)] < 0 ? -1.0 : 1.0;
        gd[size_t(k)] += g_eff_scale * code_at_zero_scale(d_side * want, f.scale_lo, f.scale_hi);
      } else {
        const double tau = want / d, u = std::nearbyint(tau);
        if (u >= f.scale_lo && u <= f.scale_hi) {
          gs[idx] += g_eff_scale;
          gd[size_t(k)] += g_eff_scale * (sc - tau);
        } else {
          gd[size_t(k)] += g_eff_scale * sc;
        }
      }
      if (f.min_hi == 0) continue;
      // Effective offset = -(dmin * mn) with mn = nearest(-offset / dmin) in [0, min_hi].
      const double dm = half_to_float(bp.m), mn = bp.mins[size_t(j)];
      const double want_min = -double(p.offset[idx]);
      if (dm == 0) {
        gm[size_t(k)] -= g_eff_offset * code_at_zero_scale(want_min, 0, f.min_hi);
      } else {
        const double mu = want_min / dm, u = std::nearbyint(mu);
        if (u >= 0 && u <= f.min_hi) {
          go[idx] += g_eff_offset;
          gm[size_t(k)] -= g_eff_offset * (mn - mu);
        } else {
          gm[size_t(k)] -= g_eff_offset * mn;
        }
      }
    }
  });
  grad_x.swap(gx);
  if (!grads) return;
  auto store = [&](const std::vector<double>& g, std::vector<float>& out) {
    out.resize(g.size());
    for (size_t i = 0; i < g.size(); ++i) out[i] = float(g[i] * double(grad_factor));
  };
  store(gs, grads->grad_scale);
  store(go, grads->grad_offset);
  store(gd, grads->grad_super_scale);
  store(gm, grads->grad_super_min);
}

}  // namespace detail

/// Writes the fake-quantized x into `out` (resized; may be x itself): every block of x rounded to
/// the nearest codes on the grid format_block_params(params, k) gives, and decoded. Bit for bit
/// what the format decodes from export_format_blocks(x, params) (formats' invariant: decode =
/// decode_value of each sub-block's effective parameters). For F16/BF16 the storage rounding,
/// for F32 a copy. Throws lowbit::Error for non-finite x, params that do not fit x (see
/// validate()), or a value F16/BF16 cannot hold.
inline void format_fake_quantize_into(const Eigen::Ref<const MatrixXfR>& x,
                                      const FormatParams& params, MatrixXfR& out) {
  detail::check_format_input(x, params);
  const formats::Format* fp = params.format();
  if (!fp) {
    MatrixXfR y(x.rows(), x.cols());
    for (Index r = 0; r < x.rows(); ++r)
      for (Index c = 0; c < x.cols(); ++c) y(r, c) = detail::plain_round(params.type, x(r, c));
    out.swap(y);
    return;
  }
  const formats::Format& f = *fp;
  MatrixXfR y(x.rows(), x.cols());
  int8_t codes[256];
  detail::for_each_format_block(params, [&](Index, Index r, Index c0, const formats::BlockParams& bp) {
    const float* xb = x.data() + r * x.outerStride() + c0;
    float* yb = y.data() + r * y.outerStride() + c0;
    detail::block_codes(f, bp, xb, codes);
    for (int j = 0; j < f.sub_blocks(); ++j) {
      const formats::SubBlockParams s = f.sub_block_params(bp, j);
      for (int i = j * f.sub_block; i < (j + 1) * f.sub_block; ++i)
        yb[i] = formats::decode_value(s, codes[i], f.has_offset);
    }
  });
  out.swap(y);
}

/// The fake-quantized x on the grid of params.type (see format_fake_quantize_into).
inline MatrixXfR format_fake_quantize(const Eigen::Ref<const MatrixXfR>& x,
                                      const FormatParams& params) {
  MatrixXfR out;
  format_fake_quantize_into(x, params, out);
  return out;
}

/// The tensor bytes of x in params.type, as GGUF stores a [rows, cols] tensor (rows of
/// formats::row_bytes(type, cols) bytes): formats' pack of each block's format_block_params()
/// and the codes format_fake_quantize() chose, so formats::decode_matrix of the result equals
/// format_fake_quantize(x, params) bit for bit. F32/F16/BF16: the values in that type. Throws as
/// format_fake_quantize_into.
inline std::vector<uint8_t> export_format_blocks(const Eigen::Ref<const MatrixXfR>& x,
                                                 const FormatParams& params) {
  detail::check_format_input(x, params);
  const formats::Format* fp = params.format();
  if (!fp) return formats::quantize_matrix(params.type, x);
  const formats::Format& f = *fp;
  std::vector<uint8_t> out(size_t(params.blocks()) * size_t(f.type_size));
  int8_t codes[256];
  detail::for_each_format_block(params, [&](Index k, Index r, Index c0, const formats::BlockParams& bp) {
    detail::block_codes(f, bp, x.data() + r * x.outerStride() + c0, codes);
    f.pack(bp, codes, out.data() + size_t(k) * size_t(f.type_size));
  });
  return out;
}

/// LSQ's gradient scale for a weight on a format grid: 1 / sqrt(numel * qmax) with qmax the
/// format's largest code (7 for Q4_0, 15 for Q4_1, 3 for Q2_K, ...); 1 for plain types.
inline float format_grad_factor(const FormatParams& params) {
  detail::require(params.rows * params.cols > 0, "params: expected a non-empty weight, got {}x{}",
                  params.rows, params.cols);
  const formats::Format* f = params.format();
  if (!f) return 1.0f;
  return float(1.0 / std::sqrt(double(params.rows) * double(params.cols) * double(f->qmax)));
}

/// As format_lsq_backward below, into `out` (its buffers are reused; out.grad_x may alias grad_y).
inline void format_lsq_backward_into(const Eigen::Ref<const MatrixXfR>& grad_y,
                                     const Eigen::Ref<const MatrixXfR>& x,
                                     const FormatParams& params, float grad_factor,
                                     FormatGrads& out) {
  detail::format_backward(grad_y, x, params, grad_factor, out.grad_x, &out);
}

/// Gradients of format_fake_quantize(x, params), LSQ/LSQ+ on the format's grid. Per element,
/// with s, o the effective scale and offset of its sub-block, t = (x - o) / s and q its code:
///   inside (nearbyint(t) in [qmin, qmax]): d/dx = 1, d/ds = q - t, d/do = 0;
///   clipped: d/dx = 0, d/ds = q (the end code), d/do = 1
/// (a zero s counts as clipped, its d/ds the end code x lies towards, approached from the side of
/// the learned scale's sign). These reach the learned values straight through every rounding
/// of parameters: legacy formats' scale and offset get d/ds and d/do (the fp16 rounding passes
/// through). K-quants: s = d * sc with sc = nearest(scale / d) in [lo, hi], so with
/// tau = scale / d, `scale` gets d/ds and d (super_scale) gets d/ds * (sc - tau) when
/// nearbyint(tau) is in range, and d gets d/ds * sc otherwise (LSQ again, one level up); the
/// offsets likewise with o = -(dmin * mn): `offset` gets d/do, dmin gets -d/do * (mn - mu) with
/// mu = -offset / dmin (or -d/do * mn when mn is clipped). Sums over each block, times
/// `grad_factor`. Plain types: grad_x = grad_y, no parameters. Throws lowbit::Error on
/// mismatched shapes, non-finite input or gradients, params that do not fit x.
inline FormatGrads format_lsq_backward(const Eigen::Ref<const MatrixXfR>& grad_y,
                                       const Eigen::Ref<const MatrixXfR>& x,
                                       const FormatParams& params, float grad_factor = 1.0f) {
  FormatGrads out;
  format_lsq_backward_into(grad_y, x, params, grad_factor, out);
  return out;
}

/// The straight-through-estimator gradient alone (format_lsq_backward's grad_x) into grad_x
/// (resized; may alias grad_y).
inline void format_fake_quantize_backward_into(const Eigen::Ref<const MatrixXfR>& grad_y,
                                               const Eigen::Ref<const MatrixXfR>& x,
                                               const FormatParams& params, MatrixXfR& grad_x) {
  detail::format_backward(grad_y, x, params, 1.0f, grad_x, nullptr);
}

/// The straight-through-estimator gradient of format_fake_quantize with respect to x.
inline MatrixXfR format_fake_quantize_backward(const Eigen::Ref<const MatrixXfR>& grad_y,
                                               const Eigen::Ref<const MatrixXfR>& x,
                                               const FormatParams& params) {
  MatrixXfR grad_x;
  format_fake_quantize_backward_into(grad_y, x, params, grad_x);
  return grad_x;
}

}  // namespace lowbit::qat
