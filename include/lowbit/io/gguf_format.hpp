// gguf_format.hpp: the GGUF container's rules shared by reader and writer: limits, tensor infos,
// key and tensor-name checks.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/type.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::io {

/// ggml's tensor types (one table for the whole library: lowbit/formats/type.hpp).
using TensorType = formats::Type;

/// The default alignment of tensor data when `general.alignment` is absent.
inline constexpr uint32_t kDefaultAlignment = 32;
/// Most dimensions a GGUF tensor may have (GGML_MAX_DIMS).
inline constexpr uint32_t kMaxDims = 4;
/// Longest tensor name in bytes: ggml keeps names in char[GGML_MAX_NAME = 64] with the NUL, so
/// gguf_init_from_file rejects names of 64 bytes or more.
inline constexpr size_t kMaxTensorName = 63;
/// Deepest nesting of arrays the reader accepts (bounds recursion on hostile files).
inline constexpr int kMaxArrayDepth = 8;
/// `general.quantization_version` of the block layouts lowbit writes (ggml's GGML_QNT_VERSION).
inline constexpr uint32_t kQuantizationVersion = 2;

/// A read-only byte range (a tensor's data inside a mapped file or buffer).
struct ByteView {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

/// Where one tensor lives: GGUF dims (ne[0] contiguous), type and byte range in the data section.
struct TensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  ///< GGUF order: ne[0] is the contiguous (column) dimension
  TensorType type = TensorType::F32;
  uint64_t offset = 0;       ///< relative to the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;      ///< exactly the bytes stored: n_elements / block_size * type_size

  /// Row-major shape: cols = ne[0], rows = product of the other dims.
  Index cols() const { return static_cast<Index>(ne.empty() ? 1 : ne[0]); }
  Index rows() const { return static_cast<Index>(ne.empty() ? 0 : n_elements / ne[0]); }
  /// Bytes of one row (ne[0] elements).
  uint64_t row_bytes() const { return ne.empty() ? 0 : formats::row_bytes(type, ne[0]); }
  /// Stored bits per weight: 8 * n_bytes / n_elements.
  double bits_per_weight() const {
    return n_elements ? 8.0 * double(n_bytes) / double(n_elements) : 0.0;
  }
};

namespace detail {

using lowbit::detail::fail;
using lowbit::detail::require;

/// `s` for an error message: printable ASCII kept, other bytes as \xNN, cut after 80 bytes.
inline std::string printable(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (size_t k = 0; k < s.size() && k < 80; ++k) {
    const auto c = static_cast<unsigned char>(s[k]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += char(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > 80) out += "...";
  return out;
}

/// Why `key` is not a valid metadata key (empty, or a byte outside printable ASCII 0x20..0x7e);
/// empty when it is valid.
inline std::string key_problem(std::string_view key) {
  if (key.empty()) return "is empty";
  for (size_t k = 0; k < key.size(); ++k) {
    const auto c = static_cast<unsigned char>(key[k]);
    if (c < 0x20 || c >= 0x7f)
      return "'" + printable(key) + "' has byte 0x" + fmt::format("{:02x}", c) + " at position " +
             std::to_string(k) + " (keys are printable ASCII)";
  }
  return {};
}

/// Why `name` is not a valid tensor name (empty, longer than ggml allows, or holding a NUL byte,
/// which ggml's C strings would cut); empty when it is valid.
inline std::string tensor_name_problem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.size() > kMaxTensorName)
    return "'" + printable(name) + "' is " + std::to_string(name.size()) +
           " bytes long (ggml allows at most " + std::to_string(kMaxTensorName) + ")";
  if (name.find('\0') != std::string_view::npos)
    return "'" + printable(name) + "' holds a NUL byte";
  return {};
}

/// The ggml types whose block fits a row of `n` elements, e.g. "F32, F16, Q4_0, ...".
inline std::string types_fitting(uint64_t n) {
  std::string out;
  for (const formats::TypeInfo& t : formats::detail::kTypes)
    if (n % t.block_size == 0) {
      if (!out.empty()) out += ", ";
      out += t.name;
    }
  return out;
}

}  // namespace detail
}  // namespace lowbit::io
