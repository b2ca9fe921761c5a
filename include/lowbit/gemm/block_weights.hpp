// block_weights.hpp: the code form of block-quantized weights (GGUF's Q8_0 ... Q6_K) and its packing.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/gemm/block_layout.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

namespace lowbit {

/// Weights W[rows, cols] in block form, the input of pack_weights for GGUF-style formats. Element
///   W[n][k] = (d[n][s] * sc[n][j]) * (u[n][k] - zero) + (m[n][s] * mn[n][j])
/// with s = k / super_block, j = k / sub_block, u the unsigned codes, d and m fp16 bits per
/// (row, super-block) and sc, mn small integers per (row, sub-block). GGUF's formats map onto it as
/// (formats without offset: u = q - qmin, zero = -qmin; with offset: u = q, zero = 0):
///
/// | format | bits | zero | super | sub | offset | sc | mn |
/// | --- | ---: | ---: | ---: | ---: | --- | --- | --- |
/// | Q8_0 | 8 | 128 | 32 | 32 | no | 1 (empty) | - |
/// | Q4_0 | 4 | 8 | 32 | 32 | no | 1 | - |
/// | Q4_1 | 4 | 0 | 32 | 32 | m = min | 1 | 1 (empty) |
/// | Q5_0 | 5 | 16 | 32 | 32 | no | 1 | - |
/// | Q5_1 | 5 | 0 | 32 | 32 | m = min | 1 | 1 |
/// | Q2_K | 2 | 0 | 256 | 16 | m = -dmin | 0..15 | 0..15 |
/// | Q3_K | 3 | 4 | 256 | 16 | no | -32..31 | - |
/// | Q4_K | 4 | 0 | 256 | 32 | m = -dmin | 0..63 | 0..63 |
/// | Q5_K | 5 | 0 | 256 | 32 | m = -dmin | 0..63 | 0..63 |
/// | Q6_K | 6 | 32 | 256 | 16 | no | -128..127 | - |
struct BlockWeights {
  Index rows = 0, cols = 0;
  int bits = 0;             ///< code width, 2..8: u in [0, 2^bits - 1]
  int zero = 0;             ///< subtracted from every code, in [0, 2^bits - 1]
  Index super_block = 0;    ///< columns per d (and m): a multiple of 32 that divides cols
  Index sub_block = 0;      ///< columns per sc (and mn): 16 or 32 dividing super_block; 32 without sc, mn
  bool offset = false;      ///< true: W has the m * mn term (m and mn used)
  std::vector<uint8_t> codes;  ///< [rows][cols]: u
  std::vector<uint16_t> d;     ///< [rows][cols / super_block]: fp16 bits, finite
  std::vector<uint16_t> m;     ///< [rows][cols / super_block] when offset, else empty
  std::vector<int16_t> sc;     ///< [rows][cols / sub_block] in -128..127, or empty: every sc is 1
  std::vector<int16_t> mn;     ///< [rows][cols / sub_block] in -128..127 (offset only), or empty: 1
};

namespace detail {

/// Largest |u - zero|.
inline int block_code_span(int bits, int zero) { return std::max(zero, (1 << bits) - 1 - zero); }

/// The layout kind of `w` (see BlockLayout): the planes its bits and sub-blocks use. Throws for
/// the combinations no kind covers.
inline BlockLayout::Kind block_kind(const BlockWeights& w) {
  using Kd = BlockLayout::Kind;
  const bool pairs = !w.sc.empty() || !w.mn.empty();
  if (!pairs) return w.bits >= 6 ? Kd::b8 : w.bits == 5 ? Kd::b5 : Kd::b4;
  if (w.sub_block == 16) {
    if (w.bits <= 6) return w.bits == 2 ? Kd::b2_s16 : w.bits == 3 ? Kd::b3_s16 : Kd::b6_s16;
  } else if (w.bits <= 5) {
    return w.bits == 5 ? Kd::b5_s32 : Kd::b4_s32;
  }
  fail("w.bits: {}-bit codes with sub-scales per {} columns are not supported (16 columns: 2..6 bits, "
       "32 columns: 2..5 bits; without sub-scales: 2..8 bits)",
       w.bits, w.sub_block);
}

/// Throws lowbit::Error naming the field unless `w` can be packed (see pack_weights).
inline void validate(const BlockWeights& w) {
  require(w.rows > 0 && w.cols > 0, "w: expected a non-empty matrix, got {}x{}", w.rows, w.cols);
  require(w.bits >= 2 && w.bits <= 8, "w.bits: expected 2..8, got {}", w.bits);
  const int umax = (1 << w.bits) - 1;
  require(w.zero >= 0 && w.zero <= umax, "w.zero: expected 0..{} for {}-bit codes, got {}", umax, w.bits, w.zero);
  require(w.super_block > 0 && w.super_block % 32 == 0, "w.super_block: expected a positive multiple of 32, got {}",
          w.super_block);
  require(w.cols % w.super_block == 0, "w.cols: expected a multiple of super_block ({}), got {}", w.super_block,
          w.cols);
  require(w.sub_block == 16 || w.sub_block == 32, "w.sub_block: expected 16 or 32, got {}", w.sub_block);
  require(w.super_block % w.sub_block == 0, "w.sub_block: expected a divisor of super_block ({}), got {}",
          w.super_block, w.sub_block);
  const size_t nsup = size_t(w.rows) * size_t(w.cols / w.super_block);
  const size_t nsub = size_t(w.rows) * size_t(w.cols / w.sub_block);
  require(w.codes.size() == size_t(w.rows) * size_t(w.cols), "w.codes: expected {} values (rows * cols), got {}",
          size_t(w.rows) * size_t(w.cols), w.codes.size());
  require(w.d.size() == nsup, "w.d: expected {} values (rows * cols / super_block), got {}", nsup, w.d.size());
  require(w.m.size() == (w.offset ? nsup : 0), "w.m: expected {} values ({}), got {}", w.offset ? nsup : 0,
          w.offset ? "rows * cols / super_block" : "no offset: empty", w.m.size());
  require(w.sc.empty() || w.sc.size() == nsub, "w.sc: expected 0 or {} values (rows * cols / sub_block), got {}",
          nsub, w.sc.size());
  require(w.mn.empty() || (w.offset && w.mn.size() == nsub),
          "w.mn: expected {} values, got {}", w.offset ? "0 or rows * cols / sub_block" : "none (no offset)",
          w.mn.size());
  if (w.sc.empty() && w.mn.empty())
    require(w.sub_block == 32, "w.sub_block: expected 32 when sc and mn are empty (every sc, mn is 1), got {}",
            w.sub_block);
  else
    require((w.super_block / w.sub_block) % 2 == 0,
            "w.sub_block: sub-scales are stored in pairs, so super_block / sub_block must be even, got {} / {}",
            w.super_block, w.sub_block);
  for (size_t i = 0; i < w.codes.size(); ++i)
    if (w.codes[i] > umax)
      fail("w.codes[{}] (row {}, column {}): expected 0..{} for {}-bit codes, got {}", i, Index(i) / w.cols,
           Index(i) % w.cols, umax, w.bits, w.codes[i]);
  for (size_t i = 0; i < w.d.size(); ++i)
    require((w.d[i] & 0x7C00u) != 0x7C00u, "w.d[{}]: expected a finite half, got bits 0x{:04x}", i, w.d[i]);
  for (size_t i = 0; i < w.m.size(); ++i)
    require((w.m[i] & 0x7C00u) != 0x7C00u, "w.m[{}]: expected a finite half, got bits 0x{:04x}", i, w.m[i]);
  for (size_t i = 0; i < w.sc.size(); ++i)
    require(w.sc[i] >= -128 && w.sc[i] <= 127, "w.sc[{}]: expected -128..127, got {}", i, w.sc[i]);
  for (size_t i = 0; i < w.mn.size(); ++i)
    require(w.mn[i] >= -128 && w.mn[i] <= 127, "w.mn[{}]: expected -128..127, got {}", i, w.mn[i]);
  // The int32 bound (see kernels::reference::linear_block_int): with |c - za| <= 255 < 256,
  // |u - zero| <= E and |sc| <= 128 (1 when not stored), every partial and final sum of
  // A_s = sum_j sc_j * sum_{k in j} (c_k - za) * (u_k - zero) is at most 256 * S * E * 128 in
  // magnitude, and of B_s = sum_j mn_j * sum_{k in j} (c_k - za) at most 256 * S * 128.
  const long long lim = std::numeric_limits<int32_t>::max();
  const long long scmax = w.sc.empty() ? 1 : 128, mnmax = w.mn.empty() ? 1 : 128;
  const long long span = block_code_span(w.bits, w.zero);
  require(256LL * w.super_block * span * scmax <= lim && 256LL * w.super_block * mnmax <= lim,
          "w.super_block: {} columns of {}-bit codes{} can overflow the int32 sums (need 256 * super_block * "
          "|u - zero| * |sc| < 2^31)",
          w.super_block, w.bits, w.sc.empty() ? "" : " with sub-scales");
  (void)block_kind(w);
}

}  // namespace detail

/// Fills a BlockLayout; the one place that knows how pack_weights(BlockWeights) lays bytes out.
struct BlockLayoutBuilder {
  static BlockLayout build(const BlockWeights& w) {
    using Kd = BlockLayout::Kind;
    using Sc = BlockLayout::Scales;
    BlockLayout L;
    L.rows_ = w.rows;
    L.cols_ = w.cols;
    L.bits_ = w.bits;
    L.zero_ = w.zero;
    L.offset_ = w.offset;
    L.super_ = w.super_block;
    L.sub_ = w.sub_block;
    L.blocks_ = (w.rows + BlockLayout::block_rows - 1) / BlockLayout::block_rows;
    L.kind_ = detail::block_kind(w);
    switch (L.kind_) {
      case Kd::b8: L.low_w_ = 8, L.high_w_ = 0; break;
      case Kd::b4: case Kd::b4_s32: L.low_w_ = 4, L.high_w_ = 0; break;
      case Kd::b5: case Kd::b5_s32: L.low_w_ = 4, L.high_w_ = 1; break;
      case Kd::b2_s16: L.low_w_ = 2, L.high_w_ = 0; break;
      case Kd::b3_s16: L.low_w_ = 2, L.high_w_ = 1; break;
      case Kd::b6_s16: L.low_w_ = 4, L.high_w_ = 2; break;
    }
    const bool pairs = !w.sc.empty() || !w.mn.empty();
    auto small = [](const std::vector<int16_t>& v) {
      return std::all_of(v.begin(), v.end(), [](int16_t x) { return x >= 0 && x <= 15; });
    };
    // Kinds with sub-blocks always store sc, and mn with offset (1 where BlockWeights has none);
    // the 2-bit kind keeps Q2_K's nibbles when every value fits.
    const bool nib = pairs && w.offset && L.kind_ == Kd::b2_s16 && small(w.sc) && small(w.mn);
    L.sc_ = !pairs ? Sc::none : nib ? Sc::nibbles : Sc::int8;
    L.mn_ = !pairs || !w.offset ? Sc::none : nib ? Sc::nibbles : Sc::int8;
    L.unit_ = detail::block_unit_cols(L.low_w_, L.high_w_, L.sum_cols());

    const size_t gcols = size_t(L.group_cols()), groups = size_t(w.super_block) / gcols;
    const size_t sc_bytes = pairs ? 32 : 0, mn_bytes = L.mn_ == Sc::int8 ? 32 : 0;
    L.off_mn_ = sc_bytes;
    L.off_lo_ = sc_bytes + mn_bytes;
    L.off_hi_ = L.off_lo_ + gcols * size_t(L.low_w_) / 32 * 64;
    L.grp_ = L.off_hi_ + gcols * size_t(L.high_w_) / 32 * 64;
    L.off_d_ = groups * L.grp_;
    L.off_m_ = L.off_d_ + 32;
    L.rec_ = L.off_m_ + (w.offset ? 32 : 0);

    const Index nsup = w.cols / w.super_block, nsub_row = w.cols / w.sub_block, per_super = w.super_block / w.sub_block;
    L.data_.assign(size_t(L.blocks_) * size_t(nsup) * L.rec_, 0);
    L.wsum_.assign(size_t(L.blocks_) * size_t(nsup) * 16, 0);
    L.msum_.assign(w.offset ? size_t(L.blocks_) * size_t(nsup) * 16 : 0, 0);
    auto put_field = [](uint8_t* plane, int width, Index v, Index lane, Index j, int value) {
      const Index per = 8 / width;
      plane[(v / per) * 64 + lane * 4 + j] |= uint8_t(value << (width * (v % per)));
    };
    for (Index n = 0; n < w.rows; ++n) {
      const Index b = n / 16, lane = n % 16;
      for (Index s = 0; s < nsup; ++s) {
        uint8_t* rec = L.data_.data() + (size_t(b) * size_t(nsup) + size_t(s)) * L.rec_;
        int32_t ws = 0, ms = 0;
        for (Index kk = 0; kk < w.super_block; ++kk) {
          const Index k = s * w.super_block + kk, g = kk / Index(gcols), c = kk % Index(gcols), v = c / 4, j = c % 4;
          uint8_t* grp = rec + size_t(g) * L.grp_;
          const int u = w.codes[size_t(n) * size_t(w.cols) + size_t(k)];
          put_field(grp + L.off_lo_, L.low_w_, v, lane, j, u & ((1 << L.low_w_) - 1));
          if (L.high_w_) put_field(grp + L.off_hi_, L.high_w_, v, lane, j, u >> L.low_w_);
          const int sc = w.sc.empty() ? 1 : w.sc[size_t(n) * size_t(nsub_row) + size_t(k / w.sub_block)];
          ws += sc * (u - w.zero);
        }
        for (Index jl = 0; pairs && jl < per_super; ++jl) {
          const size_t ji = size_t(n) * size_t(nsub_row) + size_t(s * per_super + jl);
          uint8_t* pair = rec + size_t(jl / 2) * L.grp_ + size_t(lane) * 2 + size_t(jl % 2);
          const int sc = w.sc.empty() ? 1 : w.sc[ji], mn = w.mn.empty() ? 1 : w.mn[ji];
          if (nib) {
            pair[0] = uint8_t(sc | (mn << 4));
          } else {
            pair[0] = uint8_t(int8_t(sc));
            if (w.offset) pair[L.off_mn_] = uint8_t(int8_t(mn));
          }
        }
        if (w.offset)
          for (Index jl = 0; jl < per_super; ++jl)
            ms += (w.mn.empty() ? 1 : w.mn[size_t(n) * size_t(nsub_row) + size_t(s * per_super + jl)]) *
                  int32_t(w.sub_block);
        const size_t pi = size_t(n) * size_t(nsup) + size_t(s);
        std::memcpy(rec + L.off_d_ + 2 * lane, &w.d[pi], 2);
        if (w.offset) std::memcpy(rec + L.off_m_ + 2 * lane, &w.m[pi], 2);
        L.wsum_[(size_t(b) * size_t(nsup) + size_t(s)) * 16 + size_t(lane)] = ws;
        if (w.offset) L.msum_[(size_t(b) * size_t(nsup) + size_t(s)) * 16 + size_t(lane)] = ms;
      }
    }
    return L;
  }
};

/// Packs block-form weights for linear(): GGUF's formats (see BlockWeights for how each maps) and
/// any other weights of that form. The packed layout keeps each format's density (see
/// BlockLayout); linear() then runs them with int8/uint8/int8_per_group activations (integer dot
/// products, one fp16 scale step per super-block) or float32 activations (weight-only), every Isa
/// bit-identical to kernels::reference::linear_block_int / linear_block_f32. Throws lowbit::Error
/// (naming the field) for shapes and values outside BlockWeights' ranges, non-finite d or m, and
/// super-blocks so long that an int32 sum could overflow.
inline PackedWeights pack_weights(const BlockWeights& w) {
  detail::validate(w);
  PackedWeights p;
  p.set_block(BlockLayoutBuilder::build(w));
  return p;
}

}  // namespace lowbit
