// gguf.hpp: GGUF v2/v3 reader (memory-mapped, hostile-file safe) and a v3 writer for F32 tensors.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>

#include <Eigen/Core>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lowbit::io {

/// Metadata value types, with their GGUF type ids.
enum class ValueType : uint32_t {
  UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
  String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
};

/// GGML tensor types this reader knows the block layout of (ids as in the GGUF file).
enum class TensorType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10,
  Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, I8 = 24, I16 = 25, I32 = 26, I64 = 27,
  F64 = 28, BF16 = 30,
};

/// The default alignment of tensor data when `general.alignment` is absent.
inline constexpr uint32_t kDefaultAlignment = 32;
/// Most dimensions a GGUF tensor may have (GGML_MAX_DIMS).
inline constexpr uint32_t kMaxDims = 4;
/// Deepest nesting of arrays the reader accepts (bounds recursion on hostile files).
inline constexpr int kMaxArrayDepth = 8;

/// Name of a value type, for messages.
inline std::string_view to_string(ValueType t) {
  static constexpr std::string_view names[] = {"uint8", "int8",  "uint16", "int16", "uint32",
                                               "int32", "float32", "bool", "string", "array",
                                               "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : std::string_view("unknown");
}

/// One metadata value: a scalar, a string, or an array of values of one type.
struct Value {
  ValueType type = ValueType::UInt8;
  ValueType element_type = ValueType::UInt8;  ///< arrays only
  uint64_t u = 0;                             ///< unsigned integers and bool
  int64_t i = 0;                              ///< signed integers
  double f = 0.0;                             ///< float32 / float64
  std::string s;
  std::vector<Value> array;

  static Value of_uint32(uint32_t x) { Value v; v.type = ValueType::UInt32; v.u = x; return v; }
  static Value of_int32(int32_t x) { Value v; v.type = ValueType::Int32; v.i = x; return v; }
  static Value of_uint64(uint64_t x) { Value v; v.type = ValueType::UInt64; v.u = x; return v; }
  static Value of_float32(float x) { Value v; v.type = ValueType::Float32; v.f = x; return v; }
  static Value of_bool(bool x) { Value v; v.type = ValueType::Bool; v.u = x; return v; }
  static Value of_string(std::string x) {
    Value v; v.type = ValueType::String; v.s = std::move(x); return v;
  }
  /// An array of `element_type`; every element must have that type.
  static Value of_array(ValueType element_type, std::vector<Value> elements) {
    Value v; v.type = ValueType::Array; v.element_type = element_type;
    v.array = std::move(elements);
    return v;
  }

  bool is_integer() const {
    switch (type) {
      case ValueType::UInt8: case ValueType::Int8: case ValueType::UInt16: case ValueType::Int16:
      case ValueType::UInt32: case ValueType::Int32: case ValueType::UInt64: case ValueType::Int64:
        return true;
      default: return false;
    }
  }
  bool is_unsigned() const {
    return type == ValueType::UInt8 || type == ValueType::UInt16 || type == ValueType::UInt32 ||
           type == ValueType::UInt64;
  }
  /// Any integer type as int64 (throws for other types and for uint64 values above INT64_MAX).
  int64_t as_int() const {
    detail::require(is_integer(), "gguf value: expected an integer, got {}", to_string(type));
    if (!is_unsigned()) return i;
    detail::require(u <= uint64_t(std::numeric_limits<int64_t>::max()),
                    "gguf value: {} does not fit int64", u);
    return static_cast<int64_t>(u);
  }
  /// float32 / float64 (or an integer) as double.
  double as_float() const {
    if (type == ValueType::Float32 || type == ValueType::Float64) return f;
    return static_cast<double>(as_int());
  }
  bool as_bool() const {
    detail::require(type == ValueType::Bool, "gguf value: expected bool, got {}", to_string(type));
    return u != 0;
  }
  const std::string& as_string() const {
    detail::require(type == ValueType::String, "gguf value: expected string, got {}",
                    to_string(type));
    return s;
  }
  const std::vector<Value>& as_array() const {
    detail::require(type == ValueType::Array, "gguf value: expected array, got {}",
                    to_string(type));
    return array;
  }
};

/// Where one tensor lives: GGUF dims (ne[0] contiguous), type and byte range in the data section.
struct TensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  ///< GGUF order: ne[0] is the contiguous (column) dimension
  TensorType type = TensorType::F32;
  uint64_t offset = 0;       ///< relative to the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;

  /// Row-major shape: cols = ne[0], rows = product of the other dims.
  Index cols() const { return static_cast<Index>(ne.empty() ? 1 : ne[0]); }
  Index rows() const { return static_cast<Index>(ne.empty() ? 0 : n_elements / ne[0]); }
};

namespace detail {

using lowbit::detail::fail;
using lowbit::detail::require;

/// Elements per block and bytes per block of a tensor type; {0, 0} when unknown.
inline std::pair<uint64_t, uint64_t> type_layout(uint32_t type) {
  switch (static_cast<TensorType>(type)) {
    case TensorType::F32: return {1, 4};
    case TensorType::F16: return {1, 2};
    case TensorType::Q4_0: return {32, 18};
    case TensorType::Q4_1: return {32, 20};
    case TensorType::Q5_0: return {32, 22};
    case TensorType::Q5_1: return {32, 24};
    case TensorType::Q8_0: return {32, 34};
    case TensorType::Q8_1: return {32, 36};
    case TensorType::Q2_K: return {256, 84};
    case TensorType::Q3_K: return {256, 110};
    case TensorType::Q4_K: return {256, 144};
    case TensorType::Q5_K: return {256, 176};
    case TensorType::Q6_K: return {256, 210};
    case TensorType::Q8_K: return {256, 292};
    case TensorType::I8: return {1, 1};
    case TensorType::I16: return {1, 2};
    case TensorType::I32: return {1, 4};
    case TensorType::I64: return {1, 8};
    case TensorType::F64: return {1, 8};
    case TensorType::BF16: return {1, 2};
  }
  return {0, 0};
}

/// IEEE binary16 bits to float (subnormals, infinities and NaN included).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else {  // zero or subnormal: mant * 2^-24
    float v = float(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <class T>
T load_le(const uint8_t* p) {  // the supported hosts (x86-64, AArch64) are little-endian
  T x;
  std::memcpy(&x, p, sizeof(T));
  return x;
}

/// Bounds-checked cursor over the file bytes; every read names what it was reading on failure.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  const uint8_t* take(uint64_t n, const char* what) {
    require(n <= remaining(), "gguf: truncated file: {} needs {} bytes at offset {}, {} left",
            what, n, pos_, remaining());
    const uint8_t* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  template <class T>
  T read(const char* what) { return load_le<T>(take(sizeof(T), what)); }

  std::string read_string(const char* what, bool v1_lengths = false) {
    const uint64_t n = v1_lengths ? read<uint32_t>(what) : read<uint64_t>(what);
    require(n <= remaining(), "gguf: {}: string length {} exceeds the {} bytes left at offset {}",
            what, n, remaining(), pos_);
    const uint8_t* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

/// Smallest encoded size of one value of type t (used to bound counts before allocating).
inline uint64_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::UInt8: case ValueType::Int8: case ValueType::Bool: return 1;
    case ValueType::UInt16: case ValueType::Int16: return 2;
    case ValueType::UInt32: case ValueType::Int32: case ValueType::Float32: return 4;
    case ValueType::UInt64: case ValueType::Int64: case ValueType::Float64: return 8;
    case ValueType::String: return 8;
    case ValueType::Array: return 12;
  }
  return 1;
}

inline ValueType read_value_type(Cursor& c, const std::string& key) {
  const auto t = c.read<uint32_t>("metadata value type");
  require(t <= 12, "gguf: metadata '{}': unknown value type {}", key, t);
  return static_cast<ValueType>(t);
}

inline Value read_value(Cursor& c, ValueType t, const std::string& key, int depth) {
  Value v;
  v.type = t;
  switch (t) {
    case ValueType::UInt8: v.u = c.read<uint8_t>("uint8 value"); break;
    case ValueType::Int8: v.i = c.read<int8_t>("int8 value"); break;
    case ValueType::UInt16: v.u = c.read<uint16_t>("uint16 value"); break;
    case ValueType::Int16: v.i = c.read<int16_t>("int16 value"); break;
    case ValueType::UInt32: v.u = c.read<uint32_t>("uint32 value"); break;
    case ValueType::Int32: v.i = c.read<int32_t>("int32 value"); break;
    case ValueType::UInt64: v.u = c.read<uint64_t>("uint64 value"); break;
    case ValueType::Int64: v.i = c.read<int64_t>("int64 value"); break;
    case ValueType::Float32: v.f = c.read<float>("float32 value"); break;
    case ValueType::Float64: v.f = c.read<double>("float64 value"); break;
    case ValueType::Bool: {
      const auto b = c.read<uint8_t>("bool value");
      require(b <= 1, "gguf: metadata '{}': bool value must be 0 or 1, got {}", key, b);
      v.u = b;
      break;
    }
    case ValueType::String: v.s = c.read_string("string value"); break;
    case ValueType::Array: {
      require(depth < kMaxArrayDepth, "gguf: metadata '{}': arrays nested deeper than {}", key,
              kMaxArrayDepth);
      v.element_type = read_value_type(c, key);
      const auto n = c.read<uint64_t>("array length");
      // Every element takes at least min_value_bytes, so a count the file cannot hold is corrupt;
      // checking before reserve() keeps a hostile count from allocating.
      require(n <= c.remaining() / min_value_bytes(v.element_type),
              "gguf: metadata '{}': array of {} {} does not fit the {} bytes left", key, n,
              to_string(v.element_type), c.remaining());
      v.array.reserve(static_cast<size_t>(n));
      for (uint64_t k = 0; k < n; ++k) v.array.push_back(read_value(c, v.element_type, key, depth + 1));
      break;
    }
  }
  return v;
}

/// Read-only memory map of a whole file (unmapped on destruction).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    require(fd >= 0, "gguf: cannot open '{}': {}", path, std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("gguf: '{}' is not a regular file", path);
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      ::close(fd);
      require(p != MAP_FAILED, "gguf: cannot map '{}' ({} bytes)", path, size_);
      data_ = static_cast<const uint8_t*>(p);
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace detail

/// A parsed GGUF file. Metadata and tensor infos are parsed and validated on open; tensor data
/// stays in the memory map (or the caller's buffer) and is converted only when read.
class GgufFile {
 public:
  /// Memory-maps and parses `path`; throws lowbit::Error naming what is wrong with the file.
  static GgufFile open(const std::string& path) {
    auto map = std::make_shared<detail::MappedFile>(path);
    GgufFile f(map->data(), map->size());
    f.map_ = std::move(map);
    return f;
  }
  /// Parses a copy of `size` bytes at `data`.
  static GgufFile from_bytes(const uint8_t* data, size_t size) {
    detail::require(data != nullptr || size == 0, "data: expected a buffer, got nullptr");
    auto buf = std::make_shared<std::vector<uint8_t>>(data, data + size);
    GgufFile f(buf->data(), buf->size());
    f.buffer_ = std::move(buf);
    return f;
  }

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  /// Byte offset of the tensor data section in the file.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  /// Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  /// The value of `key`, or nullptr when absent.
  const Value* find(const std::string& key) const {
    const auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
  }
  /// The value of `key`; throws when absent.
  const Value& at(const std::string& key) const {
    const Value* v = find(key);
    detail::require(v != nullptr, "gguf: metadata key '{}' is missing", key);
    return *v;
  }
  int64_t get_int(const std::string& key, int64_t fallback) const {
    const Value* v = find(key);
    return v ? v->as_int() : fallback;
  }
  double get_float(const std::string& key, double fallback) const {
    const Value* v = find(key);
    return v ? v->as_float() : fallback;
  }
  std::string get_string(const std::string& key, const std::string& fallback) const {
    const Value* v = find(key);
    return v ? v->as_string() : fallback;
  }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  /// The tensor named `name`, or nullptr.
  const TensorInfo* find_tensor(const std::string& name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  const TensorInfo& tensor(const std::string& name) const {
    const TensorInfo* t = find_tensor(name);
    detail::require(t != nullptr, "gguf: tensor '{}' is missing", name);
    return *t;
  }

  /// The raw bytes of a tensor (inside the map).
  const uint8_t* tensor_data(const TensorInfo& t) const { return data_ + data_offset_ + t.offset; }

  /// A tensor as a row-major float matrix [rows = ne1*ne2*ne3, cols = ne0]; F32, F16, BF16, Q8_0
  /// and Q4_0 are supported (quantized types dequantized). Throws for other types.
  MatrixXfR read(const TensorInfo& t) const {
    MatrixXfR m(t.rows(), t.cols());
    const uint8_t* p = tensor_data(t);
    float* out = m.data();
    const uint64_t n = t.n_elements;
    switch (t.type) {
      case TensorType::F32:
        std::memcpy(out, p, n * 4);
        break;
      case TensorType::F16:
        for (uint64_t k = 0; k < n; ++k) out[k] = detail::half_to_float(detail::load_le<uint16_t>(p + 2 * k));
        break;
      case TensorType::BF16:
        for (uint64_t k = 0; k < n; ++k) out[k] = detail::bf16_to_float(detail::load_le<uint16_t>(p + 2 * k));
        break;
      case TensorType::Q8_0:  // block: fp16 scale d, 32 int8 codes; x = d * q
        for (uint64_t b = 0; b < n / 32; ++b, p += 34) {
          const float d = detail::half_to_float(detail::load_le<uint16_t>(p));
          for (int j = 0; j < 32; ++j) out[32 * b + j] = d * float(static_cast<int8_t>(p[2 + j]));
        }
        break;
      case TensorType::Q4_0:  // block: fp16 d, 16 bytes; low nibbles are x[0..15], high x[16..31]
        for (uint64_t b = 0; b < n / 32; ++b, p += 18) {
          const float d = detail::half_to_float(detail::load_le<uint16_t>(p));
          for (int j = 0; j < 16; ++j) {
            out[32 * b + j] = d * float(int(p[2 + j] & 0x0f) - 8);
            out[32 * b + j + 16] = d * float(int(p[2 + j] >> 4) - 8);
          }
        }
        break;
      default:
        detail::fail("gguf: tensor '{}': type {} is not supported for reading (F32, F16, BF16, "
                     "Q8_0, Q4_0 are)", t.name, static_cast<uint32_t>(t.type));
    }
    return m;
  }
  MatrixXfR read(const std::string& name) const { return read(tensor(name)); }

 private:
  GgufFile(const uint8_t* data, size_t size) : data_(data), size_(size) { parse(); }

  void parse() {
    using detail::require;
    require(size_ >= 4 && data_ != nullptr, "gguf: file of {} bytes is too small for a header", size_);
    detail::Cursor c(data_, size_);
    const uint8_t* magic = c.take(4, "magic");
    require(std::memcmp(magic, "GGUF", 4) == 0, "gguf: bad magic (expected 'GGUF')");
    version_ = c.read<uint32_t>("version");
    require(version_ == 2 || version_ == 3, "gguf: version {} is not supported (2 or 3)", version_);
    const auto n_tensors = c.read<uint64_t>("tensor count");
    const auto n_kv = c.read<uint64_t>("metadata count");
    // A key-value pair takes >= 12 bytes (empty key + type) plus its value; a tensor info >= 24.
    require(n_kv <= c.remaining() / 13, "gguf: metadata count {} does not fit the file", n_kv);
    kv_.reserve(static_cast<size_t>(n_kv));
    for (uint64_t k = 0; k < n_kv; ++k) {
      std::string key = c.read_string("metadata key");
      const ValueType t = detail::read_value_type(c, key);
      Value v = detail::read_value(c, t, key, 0);
      require(kv_index_.emplace(key, kv_.size()).second, "gguf: duplicate metadata key '{}'", key);
      kv_.emplace_back(std::move(key), std::move(v));
    }
    if (const Value* a = find("general.alignment")) {
      require(a->type == ValueType::UInt32, "gguf: general.alignment must be uint32, got {}",
              to_string(a->type));
      require(a->u > 0 && (a->u & (a->u - 1)) == 0,
              "gguf: general.alignment must be a power of two, got {}", a->u);
      alignment_ = static_cast<uint32_t>(a->u);
    }
    require(n_tensors <= c.remaining() / 24, "gguf: tensor count {} does not fit the file",
            n_tensors);
    tensors_.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t k = 0; k < n_tensors; ++k) {
      TensorInfo t;
      t.name = c.read_string("tensor name");
      const auto n_dims = c.read<uint32_t>("tensor dimension count");
      require(n_dims >= 1 && n_dims <= kMaxDims, "gguf: tensor '{}': {} dimensions (1..{} expected)",
              t.name, n_dims, kMaxDims);
      t.ne.resize(n_dims);
      t.n_elements = 1;
      for (auto& d : t.ne) {
        d = c.read<uint64_t>("tensor dimension");
        require(d >= 1 && d <= uint64_t(std::numeric_limits<int32_t>::max()),
                "gguf: tensor '{}': dimension {} is out of range", t.name, d);
        require(t.n_elements <= uint64_t(std::numeric_limits<int64_t>::max()) / d,
                "gguf: tensor '{}': element count overflows", t.name);
        t.n_elements *= d;
      }
      const auto type = c.read<uint32_t>("tensor type");
      const auto [block, block_bytes] = detail::type_layout(type);
      require(block != 0, "gguf: tensor '{}': unknown tensor type {}", t.name, type);
      t.type = static_cast<TensorType>(type);
      require(t.ne[0] % block == 0, "gguf: tensor '{}': ne0 = {} is not a multiple of the type's "
              "block size {}", t.name, t.ne[0], block);
      require(t.n_elements / block <= uint64_t(std::numeric_limits<int64_t>::max()) / block_bytes,
              "gguf: tensor '{}': byte size overflows", t.name);
      t.n_bytes = t.n_elements / block * block_bytes;
      t.offset = c.read<uint64_t>("tensor offset");
      require(t.offset % alignment_ == 0, "gguf: tensor '{}': offset {} is not a multiple of the "
              "alignment {}", t.name, t.offset, alignment_);
      require(tensor_index_.emplace(t.name, tensors_.size()).second,
              "gguf: duplicate tensor name '{}'", t.name);
      tensors_.push_back(std::move(t));
    }
    const uint64_t header_end = c.pos();
    data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
    require(tensors_.empty() || data_offset_ <= size_,
            "gguf: truncated file: tensor data would start at {} but the file has {} bytes",
            data_offset_, size_);
    const uint64_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;
    for (const auto& t : tensors_)
      require(t.offset <= data_size && t.n_bytes <= data_size - t.offset,
              "gguf: truncated file: tensor '{}' ({} bytes at data offset {}) runs past the end "
              "({} data bytes)", t.name, t.n_bytes, t.offset, data_size);
  }

  std::shared_ptr<detail::MappedFile> map_;
  std::shared_ptr<std::vector<uint8_t>> buffer_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0, alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

/// A tensor to write: name, GGUF dims (ne[0] contiguous) and F32 data in row-major order.
struct TensorF32 {
  std::string name;
  std::vector<uint64_t> ne;
  std::vector<float> data;

  /// A row-major matrix as a 2-D tensor (ne = {cols, rows}).
  static TensorF32 from_matrix(std::string name, const Eigen::Ref<const MatrixXfR>& m) {
    TensorF32 t{std::move(name), {uint64_t(m.cols()), uint64_t(m.rows())}, {}};
    t.data.resize(size_t(m.size()));
    Eigen::Map<MatrixXfR>(t.data.data(), m.rows(), m.cols()) = m;
    return t;
  }
  /// A vector as a 1-D tensor.
  static TensorF32 from_vector(std::string name, const Eigen::Ref<const Eigen::VectorXf>& v) {
    return {std::move(name), {uint64_t(v.size())}, std::vector<float>(v.data(), v.data() + v.size())};
  }
};

namespace detail {

template <class T>
void put(std::vector<uint8_t>& out, T x) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &x, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

inline void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

inline void put_value(std::vector<uint8_t>& out, const Value& v, const std::string& key) {
  switch (v.type) {
    case ValueType::UInt8: put<uint8_t>(out, uint8_t(v.u)); break;
    case ValueType::Int8: put<int8_t>(out, int8_t(v.i)); break;
    case ValueType::UInt16: put<uint16_t>(out, uint16_t(v.u)); break;
    case ValueType::Int16: put<int16_t>(out, int16_t(v.i)); break;
    case ValueType::UInt32: put<uint32_t>(out, uint32_t(v.u)); break;
    case ValueType::Int32: put<int32_t>(out, int32_t(v.i)); break;
    case ValueType::UInt64: put<uint64_t>(out, v.u); break;
    case ValueType::Int64: put<int64_t>(out, v.i); break;
    case ValueType::Float32: put<float>(out, float(v.f)); break;
    case ValueType::Float64: put<double>(out, v.f); break;
    case ValueType::Bool: put<uint8_t>(out, v.u ? 1 : 0); break;
    case ValueType::String: put_string(out, v.s); break;
    case ValueType::Array:
      put<uint32_t>(out, uint32_t(v.element_type));
      put<uint64_t>(out, v.array.size());
      for (const auto& e : v.array) {
        require(e.type == v.element_type, "metadata '{}': array of {} holds a {}", key,
                to_string(v.element_type), to_string(e.type));
        put_value(out, e, key);
      }
      break;
    default: fail("metadata '{}': unknown value type {}", key, uint32_t(v.type));
  }
}

}  // namespace detail

/// Serializes a GGUF v3 file: metadata in the given order, then F32 tensors aligned to
/// `alignment` (written as `general.alignment` when it is not the default 32).
inline std::vector<uint8_t> serialize_gguf(const std::vector<std::pair<std::string, Value>>& metadata,
                                           const std::vector<TensorF32>& tensors,
                                           uint32_t alignment = kDefaultAlignment) {
  detail::require(alignment > 0 && (alignment & (alignment - 1)) == 0,
                  "alignment: expected a power of two, got {}", alignment);
  for (const auto& t : tensors) {
    detail::require(!t.ne.empty() && t.ne.size() <= kMaxDims,
                    "tensors['{}'].ne: expected 1..{} dims, got {}", t.name, kMaxDims, t.ne.size());
    uint64_t n = 1;
    for (auto d : t.ne) {
      detail::require(d >= 1, "tensors['{}'].ne: expected dims >= 1", t.name);
      n *= d;
    }
    detail::require(n == t.data.size(), "tensors['{}'].data: expected {} floats, got {}", t.name, n,
                    t.data.size());
  }
  bool has_alignment = false;
  for (const auto& kv : metadata) has_alignment |= kv.first == "general.alignment";
  std::vector<uint8_t> out;
  out.insert(out.end(), {'G', 'G', 'U', 'F'});
  detail::put<uint32_t>(out, 3);
  detail::put<uint64_t>(out, tensors.size());
  const bool add_alignment = !has_alignment && alignment != kDefaultAlignment;
  detail::put<uint64_t>(out, metadata.size() + (add_alignment ? 1 : 0));
  for (const auto& [key, v] : metadata) {
    if (key == "general.alignment")
      detail::require(v.type == ValueType::UInt32 && v.u == alignment,
                      "metadata 'general.alignment': must be uint32 {} (the alignment argument)",
                      alignment);
    detail::put_string(out, key);
    detail::put<uint32_t>(out, uint32_t(v.type));
    detail::put_value(out, v, key);
  }
  if (add_alignment) {
    detail::put_string(out, "general.alignment");
    detail::put<uint32_t>(out, uint32_t(ValueType::UInt32));
    detail::put<uint32_t>(out, alignment);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors) {
    detail::put_string(out, t.name);
    detail::put<uint32_t>(out, uint32_t(t.ne.size()));
    for (auto d : t.ne) detail::put<uint64_t>(out, d);
    detail::put<uint32_t>(out, uint32_t(TensorType::F32));
    detail::put<uint64_t>(out, offset);
    offsets.push_back(offset);
    offset = (offset + 4 * t.data.size() + alignment - 1) / alignment * alignment;
  }
  out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
  const size_t base = out.size();
  for (size_t k = 0; k < tensors.size(); ++k) {
    out.resize(base + offsets[k], 0);
    const auto* b = reinterpret_cast<const uint8_t*>(tensors[k].data.data());
    out.insert(out.end(), b, b + 4 * tensors[k].data.size());
  }
  return out;
}

/// Writes serialize_gguf(...) to `path`.
inline void write_gguf(const std::string& path,
                       const std::vector<std::pair<std::string, Value>>& metadata,
                       const std::vector<TensorF32>& tensors, uint32_t alignment = kDefaultAlignment) {
  const auto bytes = serialize_gguf(metadata, tensors, alignment);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  detail::require(bool(f), "path: cannot create '{}'", path);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  detail::require(bool(f), "path: cannot write '{}'", path);
}

}  // namespace lowbit::io
