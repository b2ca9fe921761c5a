// packed_weights.hpp: QuantizedMatrix -> the interleaved layout every GEMM/GEMV kernel reads.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/half.hpp>
#include <lowbit/core/quantized_matrix.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/gemm/block_layout.hpp>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace lowbit {

class PackedWeights;
struct BlockWeights;
inline PackedWeights pack_weights(const BlockWeights& w);

/// Weights W[N, K] packed once for the kernels (like FBGEMM's PackBMatrix), from any
/// QuantizedMatrix<2..8>.
///
/// Codes are stored unsigned: u = q + o with o = 2^(bits-1) for symmetric schemes and 0 for
/// asymmetric ones, and the zero point becomes zw = z + o, so (u - zw) = (q - z) exactly.
/// - bits 5..8 use the 8-bit layout: one byte per code.
/// - bits 2..4 use the 4-bit layout: one nibble per code (INT3/INT2 codes fit a nibble, so they run
///   on the 4-bit kernels with exactly their own values).
/// Rows are grouped in blocks of 16 output channels (N padded to 16); a block is a sequence of
/// 64-byte chunks along K. In the 8-bit layout chunk c holds k = 4c..4c+3, byte lane*4 + j being
/// u[16*block + lane][4c + j]; in the 4-bit layout chunk c holds k = 8c..8c+7, byte lane*4 + j
/// holding k = 8c + j in its low nibble and k = 8c + 4 + j in its high nibble. A 64-byte chunk is
/// one zmm of VNNI operands (16 int32 lanes of 4 bytes), two ymm, or four NEON q registers.
/// K is padded with code 0 to a multiple of 4 (8-bit) or 8 (4-bit); padding never enters a result.
///
/// Parameters are kept per (block, group, lane): scale (binary16 when the matrix is per group and
/// every scale is a normal half, as GGUF's q4_0 stores them, else float32), zero point zw (bytes,
/// asymmetric schemes only; symmetric ones use the constant 2^(bits-1)) and the integer sums
/// wsum = sum over the group's real k of (u - zw), which the asymmetric-activation correction
/// needs. Per-tensor and per-channel schemes have one group spanning K. Per-group schemes need a
/// group size that is a multiple of the chunk width (4 or 8: e.g. 32, 64, 128).
///
/// Weights packed from a BlockWeights (GGUF-style formats) use block() instead, a layout of their
/// own (see BlockLayout); for them groups() are the super-blocks (so int8_per_group activations
/// get one scale per super-block) and code(), bytes(), weight_bytes() work, while the accessors
/// of the 8-bit/4-bit layouts (chunk, scale, zero_point, wsum, ...) do not apply.
class PackedWeights {
 public:
  static constexpr Index block_rows = 16;  ///< output channels per block
  static constexpr Index chunk_bytes = 64;
  static constexpr Index max_cols = 32768;  ///< keeps every int32 accumulation exact

  PackedWeights() = default;

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  /// Bits of the source codes (2..8).
  int bits() const { return bits_; }
  /// True for the 4-bit (nibble) layout, used by bits 2..4.
  bool nibbles() const { return nibbles_; }
  bool symmetric() const { return symmetric_; }
  /// K values one chunk covers: 4 (8-bit layout) or 8 (4-bit layout).
  Index chunk_k() const { return nibbles_ ? 8 : 4; }
  Index padded_cols() const { return k_pad_; }
  Index blocks() const { return blocks_; }
  Index chunks() const { return k_pad_ / chunk_k(); }
  /// Groups per row and the group width along K (K itself for per-channel/per-tensor weights).
  Index groups() const { return groups_; }
  Index group_size() const { return group_size_; }
  bool per_group() const { return per_group_; }
  bool half_scales() const { return !scale16_.empty(); }

  /// Stored bytes: codes, scales, zero points and the correction sums.
  size_t bytes() const {
    return codes_.size() + 2 * scale16_.size() + 4 * scale32_.size() + zero_.size() + 4 * wsum_.size() +
           block_.bytes();
  }
  /// Bytes a call with symmetric activations streams: codes, scales and zero points.
  size_t weight_bytes() const { return bytes() - 4 * wsum_.size() - (block_.bytes() - block_.weight_bytes()); }

  /// True for weights packed from BlockWeights; their layout is block().
  bool is_block() const { return !block_.empty(); }
  const BlockLayout& block() const { return block_; }

  // Element access for the reference kernels and tests (slow; not for inner loops).
  /// Unsigned code u of W(n, k); 0 in the padding.
  int code(Index n, Index k) const {
    if (is_block()) return block_.code(n, k);
    const Index ck = chunk_k(), c = k / ck, j = k % ck;
    const uint8_t b = chunk(n / block_rows, c)[(n % block_rows) * 4 + (j % 4)];
    return nibbles_ ? (j < 4 ? b & 0xF : b >> 4) : b;
  }
  float scale(Index n, Index g) const {
    const size_t i = param_index(n, g);
    return scale16_.empty() ? scale32_[i] : half_to_float(scale16_[i]);
  }
  int zero_point(Index n, Index g) const { return zero_.empty() ? zero_const_ : zero_[param_index(n, g)]; }
  int32_t wsum(Index n, Index g) const { return wsum_[param_index(n, g)]; }
  /// First and one-past-last real column of group g.
  Index group_begin(Index g) const { return g * group_size_; }
  Index group_end(Index g) const { return std::min(cols_, (g + 1) * group_size_); }

  // Raw arrays for the kernels.
  const uint8_t* chunk(Index block, Index c) const {
    return codes_.data() + (size_t(block) * size_t(chunks()) + size_t(c)) * chunk_bytes;
  }
  const uint8_t* block_codes(Index block) const { return chunk(block, 0); }
  const uint16_t* scales16(Index block) const { return scale16_.data() + param_index(block * block_rows, 0); }
  const float* scales32(Index block) const { return scale32_.data() + param_index(block * block_rows, 0); }
  /// Zero points of block `block` ([group][lane]), or nullptr for symmetric weights.
  const uint8_t* zero_points(Index block) const {
    return zero_.empty() ? nullptr : zero_.data() + param_index(block * block_rows, 0);
  }
  int zero_const() const { return zero_const_; }
  const int32_t* wsums(Index block) const { return wsum_.data() + param_index(block * block_rows, 0); }

 private:
  template <int Bits>
  friend PackedWeights pack_weights(const QuantizedMatrix<Bits>& w);
  friend PackedWeights pack_weights(const BlockWeights& w);

  // Block-form weights: the generic fields describe them as per-group weights whose groups are
  // the super-blocks (activation quantization relies on groups(), group_begin/end, padded_cols).
  void set_block(BlockLayout&& layout) {
    rows_ = layout.rows();
    cols_ = layout.cols();
    k_pad_ = layout.cols();
    blocks_ = layout.blocks();
    group_size_ = layout.super_block();
    groups_ = layout.supers();
    bits_ = layout.bits();
    per_group_ = true;
    symmetric_ = !layout.offset();
    nibbles_ = false;
    zero_const_ = layout.zero();
    block_ = std::move(layout);
  }

  size_t param_index(Index n, Index g) const {
    return (size_t(n / block_rows) * size_t(groups_) + size_t(g)) * block_rows + size_t(n % block_rows);
  }

  Index rows_ = 0, cols_ = 0, k_pad_ = 0, blocks_ = 0, groups_ = 0, group_size_ = 0;
  int bits_ = 0, zero_const_ = 0;
  bool nibbles_ = false, symmetric_ = true, per_group_ = false;
  std::vector<uint8_t> codes_;
  std::vector<uint16_t> scale16_;
  std::vector<float> scale32_;
  std::vector<uint8_t> zero_;
  std::vector<int32_t> wsum_;
  BlockLayout block_;
};

/// Packs quantized weights W[N, K] for linear(). Throws lowbit::Error for an empty matrix,
/// K > PackedWeights::max_cols, or a group size that is not a multiple of 4 (bits 5..8) or
/// 8 (bits 2..4). Pack once, call linear() many times.
template <int Bits>
PackedWeights pack_weights(const QuantizedMatrix<Bits>& w) {
  const Index N = w.rows(), K = w.cols();
  detail::require(N > 0 && K > 0, "w: expected a non-empty matrix, got {}x{}", N, K);
  detail::require(K <= PackedWeights::max_cols, "w.cols(): expected <= {} (int32 accumulators), got {}",
                  PackedWeights::max_cols, K);
  const Scheme& s = w.scheme();
  PackedWeights p;
  p.rows_ = N;
  p.cols_ = K;
  p.bits_ = Bits;
  p.nibbles_ = Bits <= 4;
  p.symmetric_ = s.symmetric;
  p.per_group_ = s.granularity == Granularity::per_group;
  const Index ck = p.chunk_k();
  if (p.per_group_)
    detail::require(s.group_size % ck == 0,
                    "w.scheme().group_size: expected a multiple of {} for {}-bit weights (e.g. 32, 64, 128), got {}",
                    ck, Bits, s.group_size);
  p.group_size_ = p.per_group_ ? Index(s.group_size) : K;
  p.groups_ = p.per_group_ ? (K + p.group_size_ - 1) / p.group_size_ : 1;
  p.k_pad_ = (K + ck - 1) / ck * ck;
  p.blocks_ = (N + PackedWeights::block_rows - 1) / PackedWeights::block_rows;
  const int offset = s.symmetric ? (1 << (Bits - 1)) : 0;
  p.zero_const_ = offset;

  const MatrixXiR q = w.codes();
  p.codes_.assign(size_t(p.blocks_) * size_t(p.chunks()) * PackedWeights::chunk_bytes, 0);
  for (Index n = 0; n < N; ++n)
    for (Index k = 0; k < K; ++k) {
      const auto u = uint8_t(q(n, k) + offset);
      const Index c = k / ck, j = k % ck;
      uint8_t* b = p.codes_.data() +
                   (size_t(n / PackedWeights::block_rows) * size_t(p.chunks()) + size_t(c)) * PackedWeights::chunk_bytes +
                   size_t(n % PackedWeights::block_rows) * 4 + size_t(j % 4);
      *b = p.nibbles_ ? uint8_t(*b | (j < 4 ? u : u << 4)) : u;
    }

  const size_t nparams = size_t(p.blocks_) * size_t(p.groups_) * PackedWeights::block_rows;
  std::vector<float> scales(nparams, 1.0f);
  std::vector<int> zeros(nparams, offset);
  p.wsum_.assign(nparams, 0);
  const QuantParams& qp = w.params();
  for (Index n = 0; n < N; ++n)
    for (Index g = 0; g < p.groups_; ++g) {
      const AffineParams a = qp.at(param_index(s, K, n, p.group_begin(g)));
      const size_t i = p.param_index(n, g);
      scales[i] = a.scale;
      zeros[i] = a.zero_point + offset;
      int32_t sum = 0;
      for (Index k = p.group_begin(g); k < p.group_end(g); ++k) sum += q(n, k) + offset - zeros[i];
      p.wsum_[i] = sum;
    }
  bool half = p.per_group_;
  std::vector<uint16_t> s16(half ? nparams : 0);
  // Scales are stored as fp16 only when every one rounds to a normal half: subnormals would lose
  // precision, so the group's scales stay float otherwise.
  for (size_t i = 0; half && i < nparams; ++i) half = is_normal_half(s16[i] = float_to_half(scales[i]));
  if (half)
    p.scale16_ = std::move(s16);
  else
    p.scale32_ = std::move(scales);
  if (!s.symmetric) p.zero_.assign(zeros.begin(), zeros.end());
  return p;
}

}  // namespace lowbit
