// quantized_matrix.hpp: QuantizedMatrix<Bits>, packed integer codes with their parameters.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/packing.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/types.hpp>

#include <cstdint>
#include <utility>
#include <vector>

namespace lowbit {

/// Stored bytes of a rows x cols matrix quantized with `scheme`, as QuantizedMatrix counts them;
/// lets bit allocators price a choice without quantizing.
inline size_t quantized_bytes(const Scheme& scheme, Index rows, Index cols) {
  validate(scheme);
  const auto n = static_cast<size_t>(param_count(scheme, rows, cols));
  return packed_row_bytes(cols, scheme.bits) * size_t(rows) + 4 * n + (scheme.symmetric ? 0 : n);
}

/// A quantized row-major matrix: codes packed `Bits` bits each (rows byte-aligned; INT4 two a
/// byte with the even index in the low nibble, INT2 four a byte), plus its QuantParams.
/// Storage accounting (bytes()) counts the packed codes, a float32 per scale and, for
/// asymmetric schemes, one byte per zero point (codes and zero points of 2..8 bits fit a byte).
template <int Bits>
class QuantizedMatrix {
  static_assert(Bits >= 2 && Bits <= 8, "QuantizedMatrix: Bits must be 2..8");

 public:
  static constexpr int bits = Bits;

  QuantizedMatrix() = default;

  /// Packs `codes` (each in [qmin, qmax]) with `params` (whose scheme must have `Bits` bits).
  QuantizedMatrix(const Eigen::Ref<const MatrixXiR>& codes, QuantParams params)
      : rows_(codes.rows()), cols_(codes.cols()), params_(std::move(params)) {
    detail::require(params_.scheme.bits == Bits,
                    "params.scheme.bits: expected {} for QuantizedMatrix<{}>, got {}", Bits, Bits,
                    params_.scheme.bits);
    validate(params_, rows_, cols_);
    validate_codes(codes, params_.scheme);
    stride_ = packed_row_bytes(cols_, Bits);
    packed_.resize(stride_ * static_cast<size_t>(rows_));
    for (Index r = 0; r < rows_; ++r) pack_codes(codes.data() + r * codes.outerStride(), cols_, Bits, row_data(r));
  }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  const QuantParams& params() const { return params_; }
  const Scheme& scheme() const { return params_.scheme; }

  /// Packed bytes of row r (row_stride() bytes).
  const uint8_t* row_data(Index r) const { return packed_.data() + stride_ * size_t(r); }
  size_t row_stride() const { return stride_; }
  const std::vector<uint8_t>& packed() const { return packed_; }

  /// Unpacked integer codes.
  MatrixXiR codes() const {
    MatrixXiR q(rows_, cols_);
    for (Index r = 0; r < rows_; ++r)
      unpack_codes(row_data(r), cols_, Bits, params_.scheme.symmetric, &q(r, 0));
    return q;
  }

  /// The float matrix the codes represent: (q - zero_point) * scale.
  MatrixXfR dequantize() const { return lowbit::dequantize(codes(), params_); }

  /// Stored bytes: packed codes + 4 per scale + 1 per zero point (asymmetric only).
  size_t bytes() const { return rows_ == 0 ? 0 : quantized_bytes(params_.scheme, rows_, cols_); }

  /// bytes() * 8 / number of weights.
  double bits_per_weight() const {
    return rows_ * cols_ == 0 ? 0.0 : 8.0 * double(bytes()) / double(rows_ * cols_);
  }

 private:
  uint8_t* row_data(Index r) { return packed_.data() + stride_ * size_t(r); }

  Index rows_ = 0, cols_ = 0;
  size_t stride_ = 0;
  std::vector<uint8_t> packed_;
  QuantParams params_;
};

using Int8Matrix = QuantizedMatrix<8>;
using Int4Matrix = QuantizedMatrix<4>;
using Int2Matrix = QuantizedMatrix<2>;

/// Quantizes W with explicit parameters (scheme.bits must equal Bits).
template <int Bits>
QuantizedMatrix<Bits> quantize_weights(const Eigen::Ref<const MatrixXfR>& W,
                                       const QuantParams& params) {
  detail::require(params.scheme.bits == Bits,
                  "params.scheme.bits: expected {} for quantize_weights<{}>, got {}", Bits, Bits,
                  params.scheme.bits);
  return QuantizedMatrix<Bits>(quantize(W, params), params);
}

/// Quantizes W with min-max parameters of `scheme` (scheme.bits must equal Bits), each block's
/// range scaled by the clipping factor gamma.
template <int Bits>
QuantizedMatrix<Bits> quantize_weights(const Eigen::Ref<const MatrixXfR>& W, const Scheme& scheme,
                                       float gamma = 1.0f) {
  detail::require(scheme.bits == Bits, "scheme.bits: expected {} for quantize_weights<{}>, got {}",
                  Bits, Bits, scheme.bits);
  return quantize_weights<Bits>(W, choose_params(W, scheme, gamma));
}

}  // namespace lowbit
