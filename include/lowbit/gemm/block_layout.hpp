// block_layout.hpp: the packed layout of block-form weights (GGUF's Q8_0 ... Q6_K): code planes, sub-scales, fp16 scales.
#pragma once

#include <lowbit/core/types.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

namespace lowbit {

namespace detail {

/// Exact binary16 -> float for every half: normal, subnormal, zero, infinity and NaN.
inline float half_bits_to_float(uint16_t h) noexcept {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  uint32_t f;
  if (exp == 0x1Fu) {
    f = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    f = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    f = sign;
  } else {  // subnormal: mant * 2^-24, exact in float
    int e = 0;
    uint32_t m = mant;
    while (!(m & 0x400u)) {
      m <<= 1;
      ++e;
    }
    f = sign | (uint32_t(113 - e) << 23) | ((m & 0x3FFu) << 13);
  }
  float x;
  std::memcpy(&x, &f, 4);
  return x;
}

/// std::allocator with 64-byte alignment: every packed record starts on a 32-byte boundary and
/// 64-byte chunks never straddle cache lines more than their offset forces.
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U>
  Aligned64(const Aligned64<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const Aligned64<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const Aligned64<U>&) const noexcept { return false; }
};

/// Columns of a unit (see BlockLayout::unit_cols) for code planes of widths (lw, hw): the most
/// columns, up to `cap`, for which 2 * (cols / 4) * (2^(lw + hw) - 1) * 128 <= 32767, i.e. an
/// int16 lane that adds cols / 4 vpmaddubsw pair sums of codes u <= 2^(lw+hw) - 1 and activations
/// |c| <= 128 cannot overflow. The 8-bit plane widens every vector (unit = cap).
constexpr Index block_unit_cols(int lw, int hw, Index cap) noexcept {
  if (lw == 8) return cap;
  const Index umax = (Index(1) << (lw + hw)) - 1;
  Index cols = 4;
  while (cols * 2 <= cap && 2 * (cols * 2 / 4) * umax * 128 <= 32767) cols *= 2;
  return cols;
}

}  // namespace detail

struct BlockWeights;

/// Block-form weights W[N, K] packed for the kernels (see BlockWeights for the code form and
/// gemm/reference.hpp for the math). Made by pack_weights(const BlockWeights&).
///
/// Layout. Rows are taken in blocks of 16 (N padded to 16 with zero rows), as in the 8-bit and
/// 4-bit layouts. Each (row block b, super-block s) is one contiguous *record*; the records of a
/// block follow each other along K, so a block's weights are one stream read front to back:
///   record = group 0, group 1, ..., then d (16 halves), then m (16 halves, offset formats)
///   group  = [sub-scale pair][sub-min pair][low code plane][high code plane]
/// A group covers group_cols() columns: a pair of sub-blocks (2 x 16 or 2 x 32 columns) when
/// sub-scales are stored, else 32 columns.
/// - A code plane of field width w (8, 4, 2 or 1 bit) is a run of 64-byte chunks. A chunk covers
///   4 * (8 / w) columns of the group: byte lane*4 + j of chunk c holds, in its field i
///   (bits [w*i, w*i + w)), the column 4 * (c * 8 / w + i) + j of row 16b + lane. So w = 8 is
///   exactly the 8-bit layout of PackedWeights and w = 4 exactly its 4-bit layout; each chunk is
///   one zmm, two ymm or four NEON q registers of 16 lanes x 4 bytes, lane = row.
/// - Codes are split into a low plane and an optional high plane, u = low | high << low_width,
///   in one of eight kinds (Kind), GGUF's formats in brackets:
///     without sub-scales (sub-block 32): 8-bit plane for bits 6..8 [Q8_0]; 4 for bits 2..4
///     [Q4_0, Q4_1]; 4 + 1 for 5 [Q5_0, Q5_1];
///     sub-blocks of 16: 2 for bits 2 [Q2_K]; 2 + 1 for 3 [Q3_K]; 4 + 2 for 4..6 [Q6_K];
///     sub-blocks of 32: 4 for bits 2..4 [Q4_K]; 4 + 1 for 5 [Q5_K];
///   other combinations are rejected. So every GGUF format keeps exactly its bits per code.
/// - Sub-scales sc and sub-mins mn (kinds with sub-blocks: sc always, mn with offset; 1 where
///   BlockWeights leaves them empty): the 32 bytes of a pair hold, at byte lane*2 + i, the value
///   of the group's sub-block i for that lane. As int8, or for the 2-bit kind with offset, when
///   every sc and mn is within 0..15, as one byte sc | mn << 4 (Q2_K's own nibbles; no separate
///   mn pair then).
/// - d and m: the fp16 bits of the (row, super-block) scale and offset, one per lane.
/// Bytes per 256 weights and row: Q8_0 272, Q4_0 144, Q4_1 160, Q5_0 176, Q5_1 192, Q2_K 84,
/// Q6_K 210 (all exactly GGUF's), Q3_K 114 (GGUF 110), Q4_K 148 (144), Q5_K 180 (176): the
/// 6-bit sub-scales of Q3_K/Q4_K/Q5_K are kept as whole bytes (+4 bytes per 256 weights).
///
/// Beside the records, per (block, super-block, lane) int32 correction sums that only uint8
/// (asymmetric) activations read: wsum = sum_j sc_j * sum_{k in j} (u_k - zero) and
/// msum = sum_j mn_j * |j| (offset formats).
class BlockLayout {
 public:
  static constexpr Index block_rows = 16;
  static constexpr Index chunk_bytes = 64;
  enum class Scales { none, int8, nibbles };
  /// The eight kinds of layout (code planes x sub-block of the sub-scale pairs) the kernels
  /// implement, one per family of GGUF's formats.
  enum class Kind { b8, b4, b5, b2_s16, b3_s16, b4_s32, b5_s32, b6_s16 };

  bool empty() const { return rows_ == 0; }
  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  int bits() const { return bits_; }
  int zero() const { return zero_; }
  bool offset() const { return offset_; }
  Kind kind() const { return kind_; }
  Index super_block() const { return super_; }
  Index sub_block() const { return sub_; }
  Index supers() const { return cols_ / super_; }
  Index blocks() const { return blocks_; }
  /// Field widths of the two code planes (high_width 0: no high plane).
  int low_width() const { return low_w_; }
  int high_width() const { return high_w_; }
  /// Storage of sc and of mn (none: every value 1, or mn unused without offset).
  Scales sc_store() const { return sc_; }
  Scales mn_store() const { return mn_; }
  /// True when the groups hold sub-scale (and sub-min) pairs.
  bool pairs() const { return sc_ != Scales::none; }
  /// Columns of a group and of the activation sums the kernels need per entry (see
  /// QuantizedActivations::sub_sums): the sub-block.
  Index group_cols() const { return pairs() ? 2 * sub_ : 32; }
  Index sum_cols() const { return sub_; }
  /// Columns over which the x86 kernels may add c*u in int16 before widening (a unit), chosen so
  /// that no int16 partial sum can overflow: 2 * (unit / 4) * (2^planes - 1) * 128 <= 32767.
  Index unit_cols() const { return unit_; }

  size_t record_bytes() const { return rec_; }
  size_t group_bytes() const { return grp_; }
  /// Offsets inside a group: sub-scale pair, sub-min pair, low plane, high plane.
  size_t mn_offset() const { return off_mn_; }
  size_t low_offset() const { return off_lo_; }
  size_t high_offset() const { return off_hi_; }
  /// Offsets inside a record of d and m.
  size_t d_offset() const { return off_d_; }
  size_t m_offset() const { return off_m_; }
  const uint8_t* record(Index block, Index s) const {
    return data_.data() + (size_t(block) * size_t(supers()) + size_t(s)) * rec_;
  }
  /// Correction sums of (block, super-block): 16 lanes each.
  const int32_t* wsums(Index block, Index s) const { return wsum_.data() + (size_t(block) * size_t(supers()) + size_t(s)) * 16; }
  const int32_t* msums(Index block, Index s) const { return msum_.data() + (size_t(block) * size_t(supers()) + size_t(s)) * 16; }

  /// Stored bytes: records and correction sums.
  size_t bytes() const { return data_.size() + 4 * (wsum_.size() + msum_.size()); }
  /// Bytes a call with symmetric activations streams: the records.
  size_t weight_bytes() const { return data_.size(); }

  // Element access (slow; for the reference and the tests). n < rows (padding rows are zero).
  int code(Index n, Index k) const {
    const Index s = k / super_, g = (k % super_) / group_cols(), c = (k % super_) % group_cols();
    const Index v = c / 4, j = c % 4, lane = n % block_rows;
    const uint8_t* grp = record(n / block_rows, s) + size_t(g) * grp_;
    int u = field(grp + off_lo_, low_w_, v, lane, j);
    if (high_w_) u |= field(grp + off_hi_, high_w_, v, lane, j) << low_w_;
    return u;
  }
  uint16_t d_bits(Index n, Index s) const { return half_at(record(n / block_rows, s) + off_d_, n % block_rows); }
  uint16_t m_bits(Index n, Index s) const { return offset_ ? half_at(record(n / block_rows, s) + off_m_, n % block_rows) : 0; }
  /// Sub-scale and sub-min of sub-block j of row n (1 when not stored; mn 0 for formats without offset).
  int sub_scale(Index n, Index j) const {
    if (sc_ == Scales::none) return 1;
    const uint8_t b = pair_byte(0, n, j);
    return sc_ == Scales::nibbles ? b & 0xF : int(int8_t(b));
  }
  int sub_min(Index n, Index j) const {
    if (!offset_) return 0;
    if (mn_ == Scales::none) return 1;
    if (mn_ == Scales::nibbles) return pair_byte(0, n, j) >> 4;
    return int(int8_t(pair_byte(off_mn_, n, j)));
  }
  int32_t wsum(Index n, Index s) const { return wsums(n / block_rows, s)[n % block_rows]; }
  int32_t msum(Index n, Index s) const { return offset_ ? msums(n / block_rows, s)[n % block_rows] : 0; }

 private:
  friend struct BlockLayoutBuilder;

  static uint16_t half_at(const uint8_t* p, Index lane) {
    uint16_t h;
    std::memcpy(&h, p + 2 * lane, 2);
    return h;
  }
  static int field(const uint8_t* plane, int w, Index v, Index lane, Index j) {
    const Index per = 8 / w;  // fields per byte
    const uint8_t b = plane[(v / per) * chunk_bytes + lane * 4 + j];
    return (b >> (w * (v % per))) & ((1 << w) - 1);
  }
  uint8_t pair_byte(size_t off, Index n, Index j) const {
    const Index per_super = super_ / sub_, s = j / per_super, jl = j % per_super;
    return record(n / block_rows, s)[size_t(jl / 2) * grp_ + off + size_t(n % block_rows) * 2 + size_t(jl % 2)];
  }

  Index rows_ = 0, cols_ = 0, super_ = 0, sub_ = 0, blocks_ = 0, unit_ = 0;
  int bits_ = 0, zero_ = 0, low_w_ = 0, high_w_ = 0;
  bool offset_ = false;
  Kind kind_ = Kind::b8;
  Scales sc_ = Scales::none, mn_ = Scales::none;
  size_t rec_ = 0, grp_ = 0, off_mn_ = 0, off_lo_ = 0, off_hi_ = 0, off_d_ = 0, off_m_ = 0;
  std::vector<uint8_t, detail::Aligned64<uint8_t>> data_;
  std::vector<int32_t> wsum_, msum_;
};

}  // namespace lowbit
