// scheme.hpp: what a quantizer produces: bit width, signedness, granularity and code range.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>

#include <algorithm>
#include <string_view>

namespace lowbit {

/// How many (scale, zero point) pairs a matrix has: one, one per row, or one per row group.
enum class Granularity { per_tensor, per_channel, per_group };

inline std::string_view to_string(Granularity g) {
  switch (g) {
    case Granularity::per_tensor: return "per_tensor";
    case Granularity::per_channel: return "per_channel";
    case Granularity::per_group: return "per_group";
  }
  return "unknown";
}

/// A quantization scheme. Symmetric schemes use signed codes and zero point 0; asymmetric ones
/// use unsigned codes [0, 2^bits - 1] with an integer zero point. Per channel means per row;
/// per group means `group_size` consecutive elements of a row (the last group may be shorter).
/// `narrow_range` drops the lowest code (e.g. INT8 symmetric becomes [-127, 127]).
struct Scheme {
  int bits = 8;
  bool symmetric = true;
  Granularity granularity = Granularity::per_tensor;
  int group_size = 0;
  bool narrow_range = false;

  int qmin() const { return (symmetric ? -(1 << (bits - 1)) : 0) + (narrow_range ? 1 : 0); }
  int qmax() const { return symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }

  static Scheme per_tensor(int bits, bool symmetric = true) {
    return {bits, symmetric, Granularity::per_tensor, 0, false};
  }
  static Scheme per_channel(int bits, bool symmetric = true) {
    return {bits, symmetric, Granularity::per_channel, 0, false};
  }
  static Scheme per_group(int bits, int group_size, bool symmetric = true) {
    return {bits, symmetric, Granularity::per_group, group_size, false};
  }
};

inline bool operator==(const Scheme& a, const Scheme& b) {
  return a.bits == b.bits && a.symmetric == b.symmetric && a.granularity == b.granularity &&
         a.group_size == b.group_size && a.narrow_range == b.narrow_range;
}
inline bool operator!=(const Scheme& a, const Scheme& b) { return !(a == b); }

/// Throws lowbit::Error unless the scheme is usable: bits in 2..8, group_size > 0 per group.
inline void validate(const Scheme& s) {
  detail::require(s.bits >= 2 && s.bits <= 8, "scheme.bits: expected 2..8, got {}", s.bits);
  detail::require(s.granularity == Granularity::per_tensor ||
                      s.granularity == Granularity::per_channel ||
                      s.granularity == Granularity::per_group,
                  "scheme.granularity: not a Granularity value");
  if (s.granularity == Granularity::per_group)
    detail::require(s.group_size > 0, "scheme.group_size: expected > 0 for per_group, got {}",
                    s.group_size);
}

/// Number of parameter groups in one row of `cols` elements.
inline Index groups_per_row(const Scheme& s, Index cols) {
  switch (s.granularity) {
    case Granularity::per_group: return (cols + s.group_size - 1) / s.group_size;
    default: return 1;
  }
}

/// Number of (scale, zero point) pairs for a rows x cols matrix.
inline Index param_count(const Scheme& s, Index rows, Index cols) {
  return s.granularity == Granularity::per_tensor ? 1 : rows * groups_per_row(s, cols);
}

/// Width of the parameter blocks along a row: the group size, or the whole row.
inline Index block_width(const Scheme& s, Index cols) {
  return s.granularity == Granularity::per_group ? s.group_size : cols;
}

/// Index of the parameters that element (r, c) of a rows x cols matrix uses.
inline Index param_index(const Scheme& s, Index cols, Index r, Index c) {
  switch (s.granularity) {
    case Granularity::per_tensor: return 0;
    case Granularity::per_channel: return r;
    case Granularity::per_group: return r * groups_per_row(s, cols) + c / s.group_size;
  }
  return 0;
}

namespace detail {

/// Calls f(param_index, row, col_begin, col_end) for every contiguous run of a row that shares
/// one parameter pair; runs are visited in row-major order.
template <class F>
void for_each_block(const Scheme& s, Index rows, Index cols, F&& f) {
  const Index width = block_width(s, cols);
  const Index per_row = groups_per_row(s, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index g = 0; g < per_row; ++g) {
      const Index c0 = g * width;
      const Index c1 = std::min(cols, c0 + width);
      const Index p = s.granularity == Granularity::per_tensor ? 0 : r * per_row + g;
      f(p, r, c0, c1);
    }
}

}  // namespace detail
}  // namespace lowbit
