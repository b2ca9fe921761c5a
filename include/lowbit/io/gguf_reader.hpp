// gguf_reader.hpp: GgufFile, the GGUF v2/v3 reader (memory-mapped, hostile-file safe).
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/format.hpp>
#include <lowbit/formats/type.hpp>
#include <lowbit/io/gguf_format.hpp>
#include <lowbit/io/mapped_file.hpp>
#include <lowbit/io/value.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lowbit::io {
namespace detail {

template <class T>
T load_le(const uint8_t* p) {  // the supported hosts (x86-64, AArch64) are little-endian
  T x;
  std::memcpy(&x, p, sizeof(T));
  return x;
}

/// The one place tensor bytes become floats: decodes the `t.n_elements` values of tensor `t` at
/// `p` into `out` with formats::decode_row (F32, F16, BF16 and every block format lowbit has a
/// codec for, bit-identical to ggml); any other type throws naming the tensor and the type.
inline void decode_tensor(const TensorInfo& t, const uint8_t* p, float* out) {
  if (!formats::detail::is_plain(t.type) && formats::find_format(t.type) == nullptr)
    fail("gguf: tensor '{}': reading type {} to float is not supported ({} are); its raw bytes "
         "are available through GgufFile::raw()",
         printable(t.name), formats::to_string(t.type), formats::detail::supported_list(true));
  formats::decode_row(t.type, p, Index(t.n_elements), out);
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

  std::string read_string(const char* what) {
    const auto n = read<uint64_t>(what);
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
  require(t <= 12, "gguf: metadata '{}': unknown value type {}", printable(key), t);
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
      require(b <= 1, "gguf: metadata '{}': bool value must be 0 or 1, got {}", printable(key), b);
      v.u = b;
      break;
    }
    case ValueType::String: v.s = c.read_string("string value"); break;
    case ValueType::Array: {
      require(depth < kMaxArrayDepth, "gguf: metadata '{}': arrays nested deeper than {}",
              printable(key), kMaxArrayDepth);
      v.element_type = read_value_type(c, key);
      const auto n = c.read<uint64_t>("array length");
      // Every element takes at least min_value_bytes, so a count the file cannot hold is corrupt;
      // checking before reserve() keeps a hostile count from allocating.
      require(n <= c.remaining() / min_value_bytes(v.element_type),
              "gguf: metadata '{}': array of {} {} does not fit the {} bytes left", printable(key),
              n, to_string(v.element_type), c.remaining());
      v.array.reserve(static_cast<size_t>(n));
      for (uint64_t k = 0; k < n; ++k) v.array.push_back(read_value(c, v.element_type, key, depth + 1));
      break;
    }
  }
  return v;
}

}  // namespace detail

/// A parsed GGUF file. Metadata and tensor infos are parsed and validated on open; tensor data
/// stays in the memory map (or the copied buffer) and is converted only when read.
///
/// Every ggml tensor type is known (block size and bytes, IQ*, TQ* and MXFP4 included), so every
/// tensor's size and offset is checked; read() decodes F32, F16, BF16 and every block format of
/// lowbit/formats (Q8_0 ... Q6_K, IQ4_NL, IQ4_XS) and throws for other types, whose bytes raw()
/// still gives.
class GgufFile {
 public:
  /// Memory-maps and parses `path`; throws lowbit::Error naming what is wrong with the file.
  static GgufFile open(const std::string& path) {
    auto map = std::make_shared<detail::MappedFile>(path);
    GgufFile f(map->data(), map->size());
    f.map_ = std::move(map);
    f.path_ = path;
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

  /// The path given to open() (empty for from_bytes()).
  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  /// Byte offset of the tensor data section in the file.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  /// Metadata in file order (copy it to start the metadata of a file to write).
  const Metadata& metadata() const { return kv_; }
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

  /// Tensor infos in file order.
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

  /// The raw bytes of a tensor (inside the map): exactly t.n_bytes, rows of t.row_bytes() each.
  ByteView raw(const TensorInfo& t) const { return {tensor_data(t), checked(t).n_bytes}; }
  ByteView raw(const std::string& name) const { return raw(tensor(name)); }
  /// Pointer to a tensor's first byte (raw(t).data).
  const uint8_t* tensor_data(const TensorInfo& t) const {
    return data_ + data_offset_ + checked(t).offset;
  }

  /// A tensor as a row-major float matrix [rows = ne1*ne2*ne3, cols = ne0]. F32, F16, BF16 and
  /// every block format of lowbit/formats are decoded (formats::decode_row, bit-identical to
  /// ggml); other types throw lowbit::Error naming the tensor and the type.
  MatrixXfR read(const TensorInfo& t) const {
    const uint8_t* p = tensor_data(t);
    MatrixXfR m(t.rows(), t.cols());
    detail::decode_tensor(t, p, m.data());
    return m;
  }
  MatrixXfR read(const std::string& name) const { return read(tensor(name)); }

 private:
  GgufFile(const uint8_t* data, size_t size) : data_(data), size_(size) { parse(); }

  /// `t` if it is one of this file's tensors (the caller may hand in any TensorInfo).
  const TensorInfo& checked(const TensorInfo& t) const {
    const TensorInfo* mine = find_tensor(t.name);
    detail::require(mine != nullptr && mine->offset == t.offset && mine->n_bytes == t.n_bytes &&
                        mine->type == t.type && mine->n_elements == t.n_elements,
                    "tensor '{}': not a tensor of this file", detail::printable(t.name));
    return *mine;
  }

  void parse() {
    using detail::printable;
    using detail::require;
    require(size_ >= 4 && data_ != nullptr, "gguf: file of {} bytes is too small for a header", size_);
    detail::Cursor c(data_, size_);
    const uint8_t* magic = c.take(4, "magic");
    require(std::memcmp(magic, "GGUF", 4) == 0, "gguf: bad magic (expected 'GGUF')");
    version_ = c.read<uint32_t>("version");
    require(version_ == 2 || version_ == 3, "gguf: version {} is not supported (2 or 3)", version_);
    const auto n_tensors = c.read<uint64_t>("tensor count");
    const auto n_kv = c.read<uint64_t>("metadata count");
    // A key-value pair takes >= 13 bytes (1-byte key + type) plus its value; a tensor info >= 25.
    require(n_kv <= c.remaining() / 13, "gguf: metadata count {} does not fit the file", n_kv);
    kv_.reserve(static_cast<size_t>(n_kv));
    for (uint64_t k = 0; k < n_kv; ++k) {
      std::string key = c.read_string("metadata key");
      const std::string problem = detail::key_problem(key);
      require(problem.empty(), "gguf: metadata key {} {}", k, problem);
      const ValueType t = detail::read_value_type(c, key);
      Value v = detail::read_value(c, t, key, 0);
      require(kv_index_.emplace(key, kv_.size()).second, "gguf: duplicate metadata key '{}'",
              printable(key));
      kv_.emplace_back(std::move(key), std::move(v));
    }
    if (const Value* a = find("general.alignment")) {
      require(a->type == ValueType::UInt32, "gguf: general.alignment must be uint32, got {}",
              to_string(a->type));
      require(a->u > 0 && (a->u & (a->u - 1)) == 0,
              "gguf: general.alignment must be a power of two, got {}", a->u);
      alignment_ = static_cast<uint32_t>(a->u);
    }
    require(n_tensors <= c.remaining() / 25, "gguf: tensor count {} does not fit the file",
            n_tensors);
    tensors_.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t k = 0; k < n_tensors; ++k) {
      TensorInfo t;
      t.name = c.read_string("tensor name");
      const std::string problem = detail::tensor_name_problem(t.name);
      require(problem.empty(), "gguf: tensor {} name {}", k, problem);
      const auto n_dims = c.read<uint32_t>("tensor dimension count");
      require(n_dims >= 1 && n_dims <= kMaxDims, "gguf: tensor '{}': {} dimensions (1..{} expected)",
              printable(t.name), n_dims, kMaxDims);
      t.ne.resize(n_dims);
      t.n_elements = 1;
      for (auto& d : t.ne) {
        d = c.read<uint64_t>("tensor dimension");
        require(d >= 1 && d <= uint64_t(std::numeric_limits<int32_t>::max()),
                "gguf: tensor '{}': dimension {} is out of range", printable(t.name), d);
        require(t.n_elements <= uint64_t(std::numeric_limits<int64_t>::max()) / d,
                "gguf: tensor '{}': element count overflows", printable(t.name));
        t.n_elements *= d;
      }
      const auto type = c.read<uint32_t>("tensor type");
      const formats::TypeInfo* info = formats::find_type(type);
      require(info != nullptr, "gguf: tensor '{}': unknown tensor type {}", printable(t.name), type);
      t.type = info->type;
      require(t.ne[0] % info->block_size == 0, "gguf: tensor '{}': ne0 = {} is not a multiple of "
              "{}'s block size {}", printable(t.name), t.ne[0], info->name, info->block_size);
      require(t.n_elements / info->block_size <=
                  uint64_t(std::numeric_limits<int64_t>::max()) / info->type_size,
              "gguf: tensor '{}': byte size overflows", printable(t.name));
      t.n_bytes = t.n_elements / info->block_size * info->type_size;
      t.offset = c.read<uint64_t>("tensor offset");
      require(t.offset % alignment_ == 0, "gguf: tensor '{}': offset {} is not a multiple of the "
              "alignment {}", printable(t.name), t.offset, alignment_);
      require(tensor_index_.emplace(t.name, tensors_.size()).second,
              "gguf: duplicate tensor name '{}'", printable(t.name));
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
              "({} data bytes)", printable(t.name), t.n_bytes, t.offset, data_size);
    // No two tensors may share bytes: sorted by offset, each must end before the next begins.
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const auto& t : tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->offset < b->offset;
    });
    for (size_t k = 1; k < by_offset.size(); ++k) {
      const TensorInfo& a = *by_offset[k - 1];
      const TensorInfo& b = *by_offset[k];
      require(a.offset + a.n_bytes <= b.offset,
              "gguf: tensor '{}': data range [{}, {}) overlaps tensor '{}' at [{}, {})",
              printable(b.name), b.offset, b.offset + b.n_bytes, printable(a.name), a.offset,
              a.offset + a.n_bytes);
    }
  }

  std::shared_ptr<detail::MappedFile> map_;
  std::shared_ptr<std::vector<uint8_t>> buffer_;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0, alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  Metadata kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace lowbit::io
