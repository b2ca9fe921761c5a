// candidate.hpp: one way to store a layer (width, group size, method) and what it costs in bytes.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/quantized_matrix.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::mixed {

/// How a candidate's weights are rounded when its distortion is measured.
enum class Method { rtn, gamma_search, gptq };

inline std::string_view to_string(Method m) {
  switch (m) {
    case Method::rtn: return "rtn";
    case Method::gamma_search: return "gamma";
    case Method::gptq: return "gptq";
  }
  return "unknown";
}

/// A storage choice for one layer. bits 2..8 quantize with `group_size` consecutive weights of a
/// row per (scale, zero point) (0 = one pair per row); bits 16 or 32 keep the layer in float,
/// stored as float32 (4 bytes a weight, no error).
struct Candidate {
  int bits = 4;
  int group_size = 128;
  bool symmetric = true;
  Method method = Method::rtn;

  bool keeps_float() const { return bits == 16 || bits == 32; }
};

inline bool operator==(const Candidate& a, const Candidate& b) {
  return a.bits == b.bits && a.group_size == b.group_size && a.symmetric == b.symmetric &&
         a.method == b.method;
}
inline bool operator!=(const Candidate& a, const Candidate& b) { return !(a == b); }

/// Short label, e.g. "4b g128 rtn", "3b ch asym gptq", "f32".
inline std::string label(const Candidate& c) {
  if (c.keeps_float()) return "f32";
  return fmt::format("{}b {}{} {}", c.bits,
                     c.group_size > 0 ? fmt::format("g{}", c.group_size) : std::string("ch"),
                     c.symmetric ? "" : " asym", to_string(c.method));
}

/// Throws lowbit::Error unless bits is 2..8, 16 or 32, group_size >= 0 and method is known.
inline void validate(const Candidate& c) {
  lowbit::detail::require((c.bits >= 2 && c.bits <= 8) || c.keeps_float(),
                  "candidate.bits: expected 2..8, 16 or 32 (float), got {}", c.bits);
  lowbit::detail::require(c.group_size >= 0, "candidate.group_size: expected >= 0 (0 = per row), got {}",
                  c.group_size);
  lowbit::detail::require(c.method == Method::rtn || c.method == Method::gamma_search ||
                      c.method == Method::gptq,
                  "candidate.method: not a Method value");
}

/// The core Scheme a quantized candidate stores with (per group, or per channel when
/// group_size is 0). Not meaningful for float candidates.
inline Scheme scheme_of(const Candidate& c) {
  validate(c);
  lowbit::detail::require(!c.keeps_float(), "candidate.bits: {} keeps float and has no Scheme", c.bits);
  return c.group_size > 0 ? Scheme::per_group(c.bits, c.group_size, c.symmetric)
                          : Scheme::per_channel(c.bits, c.symmetric);
}

/// Every stored byte of a rows x cols layer stored as `c`: core's quantized_bytes() (codes,
/// float32 scales, zero points) or 4 bytes a weight for float.
inline size_t candidate_bytes(const Candidate& c, Index rows, Index cols) {
  validate(c);
  lowbit::detail::require(rows > 0 && cols > 0, "rows/cols: expected > 0, got {}x{}", rows, cols);
  if (c.keeps_float()) return 4 * size_t(rows) * size_t(cols);
  return quantized_bytes(scheme_of(c), rows, cols);
}

/// All combinations of `widths` and `group_sizes` with one method and signedness; float widths
/// (16/32) appear once, whatever the group sizes.
inline std::vector<Candidate> candidate_grid(const std::vector<int>& widths,
                                             const std::vector<int>& group_sizes,
                                             Method method = Method::rtn, bool symmetric = true) {
  lowbit::detail::require(!widths.empty(), "widths: expected at least one width");
  lowbit::detail::require(!group_sizes.empty(), "group_sizes: expected at least one group size");
  std::vector<Candidate> out;
  for (int b : widths) {
    if (b == 16 || b == 32) {
      out.push_back({b, 0, symmetric, method});
      continue;
    }
    for (int g : group_sizes) {
      out.push_back({b, g, symmetric, method});
      validate(out.back());
    }
  }
  for (const auto& c : out) validate(c);
  return out;
}

}  // namespace lowbit::mixed
