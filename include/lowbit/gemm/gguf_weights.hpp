// gguf_weights.hpp: GGUF block tensors (Q8_0 ... Q6_K) to BlockWeights and packed weights, through formats' unpack.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/formats/type.hpp>
#include <lowbit/gemm/block_weights.hpp>
#include <lowbit/gemm/packed_weights.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace lowbit {

namespace detail {

/// The GGUF types that have a block kernel layout, in formats' order.
inline constexpr formats::Type kBlockKernelTypes[] = {
    formats::Type::Q8_0, formats::Type::Q4_0, formats::Type::Q4_1, formats::Type::Q5_0, formats::Type::Q5_1,
    formats::Type::Q2_K, formats::Type::Q3_K, formats::Type::Q4_K, formats::Type::Q5_K, formats::Type::Q6_K,
};

/// "Q8_0, Q4_0, ..., Q6_K".
inline std::string block_kernel_type_list() {
  std::string s;
  for (formats::Type t : kBlockKernelTypes) {
    if (!s.empty()) s += ", ";
    s += formats::to_string(t);
  }
  return s;
}

/// Code width of a format whose codes are the integers qmin..qmax (2^bits of them).
inline int format_bits(const formats::Format& f) {
  int bits = 0;
  while ((1 << bits) < f.qmax - f.qmin + 1) ++bits;
  return bits;
}

}  // namespace detail

/// True for the GGUF types linear() runs natively: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K,
/// Q4_K, Q5_K and Q6_K. (IQ4_NL/IQ4_XS have non-uniform levels, F32/F16/BF16 are not blocks.)
inline bool has_block_kernels(formats::Type type) noexcept {
  for (formats::Type t : detail::kBlockKernelTypes)
    if (t == type) return true;
  return false;
}

/// The code form of a GGUF tensor of `rows` rows of `cols` weights of block type `type`, stored
/// row after row at `blocks` (rows * formats::row_bytes(type, cols) bytes, as in a GGUF file).
/// Each block is unpacked with formats' unpack and mapped as the table in block_weights.hpp says:
/// codes u = q - qmin (zero = -qmin) for formats without offset, u = q (zero = 0) with one;
/// d = the block's fp16 d; legacy formats have no sub-scales (every sc is 1); Q4_1/Q5_1 keep
/// m = their min with mn = 1; Q2_K/Q4_K/Q5_K store m = -dmin (the fp16 sign bit flipped: exact)
/// and mn = their mins; Q3_K/Q6_K's sc are their signed sub-block scales. So W[n][k] of the code
/// form is exactly formats::decode_row's value of that weight.
/// Throws lowbit::Error, naming the argument, for a type without a block kernel layout (naming it
/// and the supported ones), rows or cols <= 0, cols not a multiple of the type's block, a null
/// pointer, and blocks whose d (or min/dmin) is not a finite half (naming the row and block).
inline BlockWeights block_weights(formats::Type type, const uint8_t* blocks, Index rows, Index cols) {
  detail::require(has_block_kernels(type), "type: {} has no block kernel layout in lowbit; supported: {}",
                  formats::to_string(type), detail::block_kernel_type_list());
  const formats::Format& f = formats::format(type);
  detail::require(rows > 0 && cols > 0, "rows, cols: expected a non-empty matrix, got {}x{}", rows, cols);
  detail::require(cols % f.block_size == 0, "cols: {} is not a multiple of {}'s block of {}", cols, f.name,
                  f.block_size);
  detail::require(blocks != nullptr, "blocks: expected the tensor's bytes, got nullptr");

  const bool offset = f.has_offset, kquant = f.scale_hi != 0, mins = f.min_hi != 0;
  const Index per_row = cols / f.block_size, nsub_block = f.sub_blocks();
  const size_t row_bytes = size_t(per_row) * size_t(f.type_size);
  BlockWeights w;
  w.rows = rows;
  w.cols = cols;
  w.bits = detail::format_bits(f);
  w.zero = offset ? 0 : -f.qmin;
  w.super_block = f.block_size;
  w.sub_block = kquant ? f.sub_block : 32;
  w.offset = offset;
  const size_t nsup = size_t(rows) * size_t(per_row), nsub = nsup * size_t(nsub_block);
  w.codes.resize(size_t(rows) * size_t(cols));
  w.d.resize(nsup);
  if (offset) w.m.resize(nsup);
  if (kquant) w.sc.resize(nsub);
  if (mins) w.mn.resize(nsub);

  formats::BlockParams p;
  int8_t q[256];
  for (Index r = 0; r < rows; ++r)
    for (Index b = 0; b < per_row; ++b) {
      const uint8_t* block = blocks + size_t(r) * row_bytes + size_t(b) * size_t(f.type_size);
      f.unpack(block, p, q);
      detail::require(is_finite_half(p.d), "blocks: {} row {} block {}: d is not a finite half (bits 0x{:04x})",
                      f.name, r, b, p.d);
      if (offset)
        detail::require(is_finite_half(p.m), "blocks: {} row {} block {}: {} is not a finite half (bits 0x{:04x})",
                        f.name, r, b, mins ? "dmin" : "m", p.m);
      const size_t s = size_t(r) * size_t(per_row) + size_t(b);
      w.d[s] = p.d;
      if (offset) w.m[s] = mins ? uint16_t(p.m ^ 0x8000u) : p.m;  // m = -dmin: the sign bit, exact
      uint8_t* u = w.codes.data() + size_t(r) * size_t(cols) + size_t(b) * size_t(f.block_size);
      for (int i = 0; i < f.block_size; ++i) u[i] = uint8_t(int(q[i]) - f.qmin);
      for (Index j = 0; j < (kquant ? nsub_block : 0); ++j) {
        w.sc[s * size_t(nsub_block) + size_t(j)] = p.scales[size_t(j)];
        if (mins) w.mn[s * size_t(nsub_block) + size_t(j)] = p.mins[size_t(j)];
      }
    }
  return w;
}

/// Packs a GGUF tensor of block type `type` (rows x cols weights at `blocks`, rows after rows as
/// GGUF stores them) for linear(): block_weights() then pack_weights(BlockWeights). The bytes are
/// only read; linear() then runs the format natively (W·A8 integer dot products or weight-only),
/// never expanding it to float. Throws as block_weights() does.
inline PackedWeights pack_weights(formats::Type type, const uint8_t* blocks, Index rows, Index cols) {
  return pack_weights(block_weights(type, blocks, rows, cols));
}

}  // namespace lowbit
