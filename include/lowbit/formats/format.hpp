// format.hpp: the run-time table of block codecs and the row/matrix functions on top of them.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/half.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/block.hpp>
#include <lowbit/formats/iq4_nl.hpp>
#include <lowbit/formats/iq4_xs.hpp>
#include <lowbit/formats/q2_k.hpp>
#include <lowbit/formats/q3_k.hpp>
#include <lowbit/formats/q4_0.hpp>
#include <lowbit/formats/q4_1.hpp>
#include <lowbit/formats/q4_k.hpp>
#include <lowbit/formats/q5_0.hpp>
#include <lowbit/formats/q5_1.hpp>
#include <lowbit/formats/q5_k.hpp>
#include <lowbit/formats/q6_k.hpp>
#include <lowbit/formats/q8_0.hpp>
#include <lowbit/formats/type.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::formats {

/// One block format at run time: the constants and functions of its codec struct (Q4_K, ...).
struct Format {
  Type type;
  std::string_view name;
  int block_size, type_size, sub_block;
  int qmin, qmax;  ///< code range
  bool has_offset;
  int scale_lo, scale_hi;  ///< sub-block scale range (0, 0: no sub-block scales)
  int min_hi;              ///< sub-block mins are 0..min_hi (0: none)
  /// Non-uniform grids (IQ4_NL, IQ4_XS): the n_levels ascending values a code may take (codes are
  /// these values, decode x = scale * code); nullptr for the formats whose codes are qmin..qmax.
  const int8_t* levels;
  int n_levels;
  void (*decode)(const uint8_t* block, float* out) noexcept;
  void (*unpack)(const uint8_t* block, BlockParams& p, int8_t* codes) noexcept;
  void (*pack)(const BlockParams& p, const int8_t* codes, uint8_t* block) noexcept;
  SubBlockParams (*sub_block_params)(const BlockParams& p, int j) noexcept;
  BlockParams (*fit)(const SubBlockParams* wanted) noexcept;
  void (*fit_sub_block)(BlockParams& p, int j, const SubBlockParams& wanted) noexcept;
  void (*quantize)(const float* x, const float* importance, uint8_t* block) noexcept;
  /// The parameters the reference rounding wants for `n` values (one sub-block) with their range
  /// clipped by `gamma` (1 = none): min-max with offsets, the signed abs-max rule without (see
  /// rounding.hpp, detail::wanted_params). fit() of these, gamma = 1, is the plain rounding's grid
  /// choice; weight algorithms search gamma and fit the result.
  SubBlockParams (*wanted_params)(const float* x, int n, float gamma) noexcept;

  int sub_blocks() const noexcept { return block_size / sub_block; }
};

namespace detail {

template <class F>
constexpr Format make_format(std::string_view name) noexcept {
  constexpr CodeSet set = code_set<F>();
  return Format{F::type,      name,          F::block_size, F::type_size, F::sub_block,
                F::qmin,      F::qmax,       F::has_offset, F::scale_lo,  F::scale_hi,
                F::min_hi,    set.levels,    set.n_levels,  &F::decode,   &F::unpack,
                &F::pack,     &F::sub_block_params,         &F::fit,      &F::fit_sub_block,
                &F::quantize, &wanted_params<F>};
}

inline constexpr Format kFormats[] = {
    make_format<Q8_0>("Q8_0"), make_format<Q4_0>("Q4_0"), make_format<Q4_1>("Q4_1"),
    make_format<Q5_0>("Q5_0"), make_format<Q5_1>("Q5_1"), make_format<Q2_K>("Q2_K"),
    make_format<Q3_K>("Q3_K"), make_format<Q4_K>("Q4_K"), make_format<Q5_K>("Q5_K"),
    make_format<Q6_K>("Q6_K"), make_format<IQ4_NL>("IQ4_NL"), make_format<IQ4_XS>("IQ4_XS"),
};

/// "F32, F16, BF16, Q8_0, ..." (with_plain) or just the block formats.
inline std::string supported_list(bool with_plain) {
  std::string s = with_plain ? "F32, F16, BF16" : "";
  for (const Format& f : kFormats) {
    if (!s.empty()) s += ", ";
    s += f.name;
  }
  return s;
}

inline bool is_plain(Type t) noexcept {
  return t == Type::F32 || t == Type::F16 || t == Type::BF16;
}

/// The format of `type` for a row function, or nullptr for F32/F16/BF16; throws naming the type
/// and the supported ones otherwise.
inline const Format* row_format(const char* what, Type type);

/// Throws unless n >= 0 and a multiple of the block of `type`.
inline void require_row_length(const char* what, Type type, Index n, int block_size) {
  lowbit::detail::require(n >= 0, "{}: n = {} must be >= 0", what, n);
  lowbit::detail::require(n % block_size == 0, "{}: n = {} is not a multiple of {}'s block of {}",
                          what, n, to_string(type), block_size);
}

}  // namespace detail

/// The codec of `type`, or nullptr for a type lowbit has no block codec for (F32, IQ2_XXS, ...).
inline const Format* find_format(Type type) noexcept {
  for (const Format& f : detail::kFormats)
    if (f.type == type) return &f;
  return nullptr;
}

/// The codec of `type`; throws lowbit::Error naming the type and the supported ones.
inline const Format& format(Type type) {
  const Format* f = find_format(type);
  if (!f)
    lowbit::detail::fail("format: {} has no block codec in lowbit; supported: {}", to_string(type),
                         detail::supported_list(false));
  return *f;
}

inline const Format* detail::row_format(const char* what, Type type) {
  if (is_plain(type)) return nullptr;
  const Format* f = find_format(type);
  if (!f)
    lowbit::detail::fail("{}: type {} is not supported; supported: {}", what, to_string(type),
                         supported_list(true));
  return f;
}

/// Decodes a row of `n` values of `type` (a block format, or F32/F16/BF16) stored at `src`
/// (little-endian, as in GGUF) into `out`. Throws lowbit::Error for an unsupported type, n < 0 or
/// n not a multiple of the block.
inline void decode_row(Type type, const uint8_t* src, Index n, float* out) {
  const Format* f = detail::row_format("decode_row", type);
  detail::require_row_length("decode_row", type, n, f ? f->block_size : 1);
  if (n == 0) return;
  lowbit::detail::require(src != nullptr && out != nullptr,
                          "decode_row: src and out must not be null");
  if (!f) {
    for (Index i = 0; i < n; ++i) {
      if (type == Type::F32) {
        std::memcpy(out + i, src + 4 * i, 4);  // GGUF is little-endian, as the hosts lowbit runs on
      } else {
        const uint16_t h = detail::load_u16(src + 2 * i);
        out[i] = type == Type::F16 ? half_to_float(h) : bf16_to_float(h);
      }
    }
    return;
  }
  for (Index b = 0; b < n / f->block_size; ++b)
    f->decode(src + b * f->type_size, out + b * f->block_size);
}

/// Encodes a row of `n` finite values as `type`: block formats with their reference rounding
/// (Format::quantize; `importance`, if given, holds n weights >= 0), F32/F16/BF16 by nearest
/// rounding (importance unused). Writes row_bytes(type, n) bytes to `out`. Throws lowbit::Error,
/// before writing anything, for NaN/Inf in x (naming the position), importance < 0 or not finite,
/// a value F16 or BF16 would overflow, an unsupported type, or n not a multiple of the block.
inline void quantize_row(Type type, const float* x, Index n, uint8_t* out,
                         const float* importance = nullptr) {
  const Format* f = detail::row_format("quantize_row", type);
  detail::require_row_length("quantize_row", type, n, f ? f->block_size : 1);
  if (n == 0) return;
  lowbit::detail::require(x != nullptr && out != nullptr,
                          "quantize_row: x and out must not be null");
  for (Index i = 0; i < n; ++i)
    lowbit::detail::require(std::isfinite(x[i]), "quantize_row: x[{}] = {} is not finite", i, x[i]);
  if (f && importance)
    for (Index i = 0; i < n; ++i)
      lowbit::detail::require(std::isfinite(importance[i]) && importance[i] >= 0,
                              "quantize_row: importance[{}] = {} must be finite and >= 0", i,
                              importance[i]);
  if (type == Type::F16)
    for (Index i = 0; i < n; ++i)
      lowbit::detail::require(is_finite_half(float_to_half(x[i])),
                              "quantize_row: x[{}] = {} overflows F16 (|x| < 65520 needed)", i,
                              x[i]);
  if (type == Type::BF16)
    for (Index i = 0; i < n; ++i)
      lowbit::detail::require((float_to_bf16(x[i]) & 0x7F80u) != 0x7F80u,
                              "quantize_row: x[{}] = {} overflows BF16", i, x[i]);
  if (!f) {
    for (Index i = 0; i < n; ++i) {
      if (type == Type::F32)
        std::memcpy(out + 4 * i, x + i, 4);
      else
        detail::store_u16(out + 2 * i,
                          type == Type::F16 ? float_to_half(x[i]) : float_to_bf16(x[i]));
    }
    return;
  }
  for (Index b = 0; b < n / f->block_size; ++b)
    f->quantize(x + b * f->block_size, importance ? importance + b * f->block_size : nullptr,
                out + b * f->type_size);
}

/// Rounds each of the block_size values x to its nearest code under the given parameters (exactly,
/// in decode's arithmetic; ties to the even code) and packs the block: the encoder for algorithms
/// that chose their own parameters on the grid (e.g. from fit). Throws lowbit::Error for NaN/Inf in
/// x or a sub-block scale or min outside the format's range.
inline void encode_block(const Format& f, const float* x, const BlockParams& p, uint8_t* out) {
  lowbit::detail::require(x != nullptr && out != nullptr,
                          "encode_block: x and out must not be null");
  for (int i = 0; i < f.block_size; ++i)
    lowbit::detail::require(std::isfinite(x[i]), "encode_block: x[{}] = {} is not finite", i, x[i]);
  if (f.scale_hi != 0)
    for (int j = 0; j < f.sub_blocks(); ++j)
      lowbit::detail::require(
          p.scales[size_t(j)] >= f.scale_lo && p.scales[size_t(j)] <= f.scale_hi,
          "encode_block: {} scales[{}] = {} is outside {}..{}", f.name, j, p.scales[size_t(j)],
          f.scale_lo, f.scale_hi);
  if (f.min_hi != 0)
    for (int j = 0; j < f.sub_blocks(); ++j)
      lowbit::detail::require(p.mins[size_t(j)] >= 0 && p.mins[size_t(j)] <= f.min_hi,
                              "encode_block: {} mins[{}] = {} is outside 0..{}", f.name, j,
                              p.mins[size_t(j)], f.min_hi);
  int8_t codes[256];
  const detail::CodeSet set{f.qmin, f.qmax, f.levels, f.n_levels};
  for (int j = 0; j < f.sub_blocks(); ++j) {
    const detail::NearestCode round(f.sub_block_params(p, j), set, f.has_offset, f.sub_block);
    for (int i = j * f.sub_block; i < (j + 1) * f.sub_block; ++i) codes[i] = int8_t(round(x[i]));
  }
  f.pack(p, codes, out);
}

/// Encodes every row of `w` as `type` (quantize_row per row): rows() * row_bytes(type, cols())
/// bytes, row after row as GGUF stores a [rows, cols] tensor. `importance`, if given, holds cols()
/// weights >= 0, one per column (llama.cpp's imatrix: the mean x² of each input feature), shared
/// by every row.
inline std::vector<uint8_t> quantize_matrix(Type type, const Eigen::Ref<const MatrixXfR>& w,
                                            const float* importance = nullptr) {
  const Format* f = detail::row_format("quantize_matrix", type);
  detail::require_row_length("quantize_matrix", type, w.cols(), f ? f->block_size : 1);
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c = 0; c < w.cols(); ++c)
      lowbit::detail::require(std::isfinite(w(r, c)),
                              "quantize_matrix: w({}, {}) = {} is not finite", r, c, w(r, c));
  const size_t rb = size_t(row_bytes(type, uint64_t(w.cols())));
  std::vector<uint8_t> out(rb * size_t(w.rows()));
  for (Index r = 0; r < w.rows(); ++r)
    quantize_row(type, w.data() + r * w.outerStride(), w.cols(), out.data() + size_t(r) * rb,
                 importance);
  return out;
}

/// Decodes a [rows, cols] tensor of `type` stored row after row at `data`.
inline MatrixXfR decode_matrix(Type type, const uint8_t* data, Index rows, Index cols) {
  const Format* f = detail::row_format("decode_matrix", type);
  lowbit::detail::require(rows >= 0, "decode_matrix: rows = {} must be >= 0", rows);
  detail::require_row_length("decode_matrix", type, cols, f ? f->block_size : 1);
  MatrixXfR out(rows, cols);
  if (rows == 0 || cols == 0) return out;
  lowbit::detail::require(data != nullptr, "decode_matrix: data must not be null");
  const size_t rb = size_t(row_bytes(type, uint64_t(cols)));
  for (Index r = 0; r < rows; ++r)
    decode_row(type, data + size_t(r) * rb, cols, out.data() + r * cols);
  return out;
}

}  // namespace lowbit::formats
