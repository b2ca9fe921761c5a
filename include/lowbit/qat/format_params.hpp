// format_params.hpp: what QAT learns for a weight stored in a GGUF block format: the wanted scales
// and offsets of its (sub-)blocks, and the exact stored parameters of the format's grid they give.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/half.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/block.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/formats/type.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit::qat {

/// The learnable parameters of one weight [rows, cols] that is stored as the GGUF type `type`.
/// Row r holds cols / block_size blocks; block k = r * (cols / block_size) + b is the b-th block
/// of row r, and sub-block j of block k has index k * sub_blocks + j.
///
/// - `scale`, `offset` (one per sub-block): the effective scale and offset the block wants
///   (x ≈ scale * q + offset), before the format rounds them onto its grid. Legacy formats
///   (Q8_0, Q4_0, Q5_0, Q4_1, Q5_1; one sub-block a block): the block's d and, for Q4_1/Q5_1, m,
///   before their fp16 rounding. K-quants: d * sc_j and -(dmin * mn_j) before sc_j and mn_j are
///   rounded to the integers nearest scale / d and -offset / dmin. `offset` is 0 and unused for
///   formats without offsets.
/// - `super_scale`, `super_min` (K-quants only, one per super-block): d and dmin before their fp16
///   rounding (`super_min` only for Q2_K, Q4_K, Q5_K).
/// - Plain types (F32, F16, BF16) have no parameters: their fake quantization is the storage
///   rounding itself.
///
/// The stored parameters a forward pass uses are format_block_params(): fp16 values nearest the
/// learned ones (saturating, ties to even) and, for the K-quants, the sub-block integers nearest
/// relative to those fp16 values (formats' fit / fit_sub_block rules), so the forward output is
/// exactly what the format decodes.
struct FormatParams {
  formats::Type type = formats::Type::F32;
  Index rows = 0, cols = 0;
  std::vector<float> scale, offset, super_scale, super_min;

  /// The block codec of `type`, or nullptr for F32/F16/BF16.
  const formats::Format* format() const noexcept { return formats::find_format(type); }
  /// Blocks of the whole tensor (0 for plain types).
  Index blocks() const noexcept {
    const formats::Format* f = format();
    return f ? rows * (cols / f->block_size) : 0;
  }
  /// Sub-blocks per block (0 for plain types).
  int sub_blocks() const noexcept {
    const formats::Format* f = format();
    return f ? f->sub_blocks() : 0;
  }
  /// Whether the format has K-quant super-block values (d, dmin) of its own.
  bool has_super() const noexcept {
    const formats::Format* f = format();
    return f && f->scale_hi != 0;
  }
};

namespace detail {

using lowbit::detail::fail;
using lowbit::detail::require;

inline bool is_plain(formats::Type t) noexcept { return formats::detail::is_plain(t); }

/// "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K".
inline std::string qat_supported_list() {
  std::string s = "F32, F16, BF16";
  for (const formats::Format& f : formats::detail::kFormats)
    if (!f.levels) s += ", " + std::string(f.name);
  return s;
}

/// Throws unless QAT supports `type` on a uniform code grid (every block format but IQ4_NL and
/// IQ4_XS, whose codes are a non-uniform set of levels) and rows of `cols` fit its blocks.
inline void require_supported(const char* what, formats::Type type, Index cols) {
  const bool plain = is_plain(type);
  const formats::Format* f = formats::find_format(type);
  require(plain || (f && !f->levels), "{}: QAT on the grid of {} is not supported; supported: {}",
          what, formats::to_string(type), qat_supported_list());
  require(cols >= 0, "{}: cols = {} must be >= 0", what, cols);
  if (f)
    require(cols % f->block_size == 0,
            "{}: rows of {} weights do not fit {}'s blocks of {} (the tensor must stay in a type "
            "whose block divides its rows, e.g. F16)",
            what, cols, f->name, f->block_size);
}

}  // namespace detail

/// Throws lowbit::Error unless `p` describes a [rows, cols] weight: a supported type whose block
/// divides cols, and one finite value per sub-block (and super-block) in each vector it needs.
inline void validate(const FormatParams& p, Index rows, Index cols) {
  detail::require_supported("params.type", p.type, p.cols);
  detail::require(p.rows == rows && p.cols == cols,
                  "params: describe a {}x{} weight, expected {}x{}", p.rows, p.cols, rows, cols);
  const formats::Format* f = p.format();
  const size_t n_sub = f ? size_t(p.blocks()) * size_t(f->sub_blocks()) : 0;
  const size_t n_super = p.has_super() ? size_t(p.blocks()) : 0;
  auto check = [](const std::vector<float>& v, size_t n, const char* name) {
    detail::require(v.size() == n, "params.{}: expected {} values, got {}", name, n, v.size());
    for (size_t i = 0; i < v.size(); ++i)
      detail::require(std::isfinite(v[i]), "params.{}[{}] = {} is not finite", name, i, v[i]);
  };
  check(p.scale, n_sub, "scale");
  check(p.offset, n_sub, "offset");
  check(p.super_scale, n_super, "super_scale");
  check(p.super_min, n_super, "super_min");
}

/// The stored parameters of block `k` as the forward pass uses them: legacy formats fit(scale,
/// offset); K-quants d = fp16(super_scale), dmin = fp16(super_min), then every sub-block's
/// integer scale (and min) nearest relative to them (formats' fit_sub_block). Exactly what the
/// exported block stores. `p` must be valid (see validate()).
inline formats::BlockParams format_block_params(const FormatParams& p, Index k) noexcept {
  const formats::Format& f = *p.format();
  const int ns = f.sub_blocks();
  const size_t j0 = size_t(k) * size_t(ns);
  if (f.scale_hi == 0) {  // legacy: one sub-block, its fp16 d (and m)
    const formats::SubBlockParams w{p.scale[j0], f.has_offset ? p.offset[j0] : 0.0f};
    return f.fit(&w);
  }
  formats::BlockParams b;
  b.d = formats::detail::fit_half(p.super_scale[size_t(k)]);
  b.m = f.min_hi != 0 ? formats::detail::fit_half(p.super_min[size_t(k)]) : uint16_t(0);
  for (int j = 0; j < ns; ++j)
    f.fit_sub_block(b, j, {p.scale[j0 + size_t(j)], f.has_offset ? p.offset[j0 + size_t(j)] : 0.0f});
  return b;
}

/// The parameters that reproduce the given blocks (`rows` rows of row_bytes(type, cols) bytes):
/// every learned value is the one the block stores (d, m, and for the K-quants d * sc_j and
/// -(dmin * mn_j), all exact in float), so format_block_params() gives the blocks' own
/// parameters back (a sub-block integer under a zero d or dmin becomes 0, which decodes alike)
/// and fake quantization of the decoded weights gives them back bit for bit. For plain types
/// only the type and shape are set. Throws lowbit::Error for an unsupported type, rows that do
/// not fit its blocks, or a block whose fp16 fields are not finite.
inline FormatParams format_params_from_blocks(formats::Type type, const uint8_t* data, Index rows,
                                              Index cols) {
  detail::require_supported("type", type, cols);
  detail::require(rows >= 0, "rows = {} must be >= 0", rows);
  FormatParams p;
  p.type = type;
  p.rows = rows;
  p.cols = cols;
  const formats::Format* f = p.format();
  if (!f) return p;
  detail::require(data != nullptr || rows * cols == 0, "data: expected blocks, got nullptr");
  const Index n = p.blocks();
  const int ns = f->sub_blocks();
  p.scale.assign(size_t(n) * size_t(ns), 0.0f);
  p.offset.assign(p.scale.size(), 0.0f);
  if (p.has_super()) {
    p.super_scale.assign(size_t(n), 0.0f);
    p.super_min.assign(size_t(n), 0.0f);
  }
  formats::BlockParams b;
  int8_t codes[256];
  for (Index k = 0; k < n; ++k) {
    f->unpack(data + size_t(k) * size_t(f->type_size), b, codes);
    detail::require(is_finite_half(b.d) && is_finite_half(b.m),
                    "blocks: block {} of {} has a non-finite fp16 field (d = 0x{:04x}, m = 0x{:04x})",
                    k, f->name, b.d, b.m);
    if (p.has_super()) {
      p.super_scale[size_t(k)] = half_to_float(b.d);
      p.super_min[size_t(k)] = f->min_hi != 0 ? half_to_float(b.m) : 0.0f;
    }
    for (int j = 0; j < ns; ++j) {
      const formats::SubBlockParams s = f->sub_block_params(b, j);
      p.scale[size_t(k) * size_t(ns) + size_t(j)] = s.scale;
      p.offset[size_t(k) * size_t(ns) + size_t(j)] = f->has_offset ? s.offset : 0.0f;
    }
  }
  return p;
}

/// The parameters of `type`'s reference rounding of `w` (formats::quantize_matrix, with the
/// per-column `importance` when given): the start point of QAT from a format's plain rounding.
/// Fake quantization of `w` itself under them gives exactly that rounding's blocks.
inline FormatParams format_params_from_weights(formats::Type type,
                                               const Eigen::Ref<const MatrixXfR>& w,
                                               const float* importance = nullptr) {
  detail::require_supported("type", type, w.cols());
  if (detail::is_plain(type)) return format_params_from_blocks(type, nullptr, w.rows(), w.cols());
  const std::vector<uint8_t> blocks = formats::quantize_matrix(type, w, importance);
  return format_params_from_blocks(type, blocks.data(), w.rows(), w.cols());
}

/// Clamps the learned values into what the format can store, after an optimiser step: |values|
/// at most 65504 (the largest fp16); for Q2_K/Q4_K/Q5_K sub-block scales, d and dmin at least 0
/// and offsets at most 0 (the format can only subtract a min). Legacy scales and the signed
/// K-quants (Q3_K, Q6_K) may take either sign.
inline void project(FormatParams& p) noexcept {
  const formats::Format* f = p.format();
  if (!f) return;
  constexpr float big = 65504.0f;
  auto clamp_all = [](std::vector<float>& v, float lo, float hi) {
    for (float& x : v) x = std::min(std::max(x, lo), hi);
  };
  const bool unsigned_sub = f->scale_hi != 0 && f->scale_lo == 0;
  clamp_all(p.scale, unsigned_sub ? 0.0f : -big, big);
  clamp_all(p.offset, -big, f->min_hi != 0 ? 0.0f : big);
  clamp_all(p.super_scale, unsigned_sub ? 0.0f : -big, big);
  clamp_all(p.super_min, 0.0f, big);
}

}  // namespace lowbit::qat
