// gguf_writer.hpp: the GGUF v3 writer: any mix of tensor types, metadata kept in order, streamed
// tensor by tensor into a temporary file renamed into place only when complete.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/formats/type.hpp>
#include <lowbit/io/file_type.hpp>
#include <lowbit/io/gguf_format.hpp>
#include <lowbit/io/gguf_reader.hpp>
#include <lowbit/io/output_file.hpp>
#include <lowbit/io/value.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace lowbit::io {

/// One tensor of a file to write: name, GGUF dims (ne[0] contiguous, the row length) and type.
/// Its bytes are rows of formats::row_bytes(type, ne[0]) each, in row-major order.
struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;
  TensorType type = TensorType::F32;
};

/// A tensor with its bytes, for the one-shot writers (exactly the tensor's byte size).
struct TensorData : TensorSpec {
  std::vector<uint8_t> bytes;
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

/// How a file is written.
struct WriteOptions {
  /// `general.file_type`: a llama_ftype value (see FileType); when absent, the one llama.cpp's
  /// loader would guess from the tensor types (guess_file_type).
  std::optional<uint32_t> file_type;
  /// Tensor data alignment; 0 takes `general.alignment` from the metadata, else 32. An alignment
  /// other than 32 is stored as `general.alignment` (added when the metadata lacks it).
  uint32_t alignment = 0;
  /// Files being read: writing onto any of them (same_file) is refused.
  std::vector<std::string> inputs;
};

/// The metadata of `src` to start a derived file from: every key in file order (tokenizer
/// included), less the `split.*` keys of multi-file models (the output is one file).
inline Metadata output_metadata(const GgufFile& src) {
  Metadata m = src.metadata();
  for (const char* key : {"split.no", "split.count", "split.tensors.count"}) remove_value(m, key);
  return m;
}

namespace detail {

inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

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

/// Checks that `v` is storable as its type (integers in range, bool 0/1, arrays of one element
/// type nested at most kMaxArrayDepth deep, so the file reopens).
inline void check_value(const Value& v, const std::string& key, int depth) {
  const auto in_u = [&](uint64_t max) {
    require(v.u <= max, "metadata['{}']: {} value {} is out of range", key, to_string(v.type), v.u);
  };
  const auto in_i = [&](int64_t min, int64_t max) {
    require(v.i >= min && v.i <= max, "metadata['{}']: {} value {} is out of range", key,
            to_string(v.type), v.i);
  };
  switch (v.type) {
    case ValueType::UInt8: return in_u(0xff);
    case ValueType::UInt16: return in_u(0xffff);
    case ValueType::UInt32: return in_u(0xffffffffu);
    case ValueType::UInt64: return;
    case ValueType::Bool: return in_u(1);
    case ValueType::Int8: return in_i(-128, 127);
    case ValueType::Int16: return in_i(-32768, 32767);
    case ValueType::Int32: return in_i(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
    case ValueType::Int64: case ValueType::Float32: case ValueType::Float64: case ValueType::String:
      return;
    case ValueType::Array:
      require(depth < kMaxArrayDepth, "metadata['{}']: arrays nested deeper than {}", key,
              kMaxArrayDepth);
      require(uint32_t(v.element_type) <= 12, "metadata['{}']: unknown array element type {}",
              key, uint32_t(v.element_type));
      for (const auto& e : v.array) {
        require(e.type == v.element_type, "metadata['{}']: array of {} holds a {}", key,
                to_string(v.element_type), to_string(e.type));
        check_value(e, key, depth + 1);
      }
      return;
  }
  fail("metadata['{}']: unknown value type {}", key, uint32_t(v.type));
}

inline void put_value(std::vector<uint8_t>& out, const Value& v) {
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
      for (const auto& e : v.array) put_value(out, e);
      break;
  }
}

/// Everything about a file to write that follows from its metadata and tensor specs: the final
/// metadata, the tensor infos with their offsets, and the header bytes (padding included).
struct GgufLayout {
  Metadata metadata;
  std::vector<TensorInfo> tensors;
  uint32_t alignment = kDefaultAlignment;
  std::vector<uint8_t> header;  ///< magic .. tensor infos (without the padding after them)
  uint64_t data_offset = 0;     ///< header.size() rounded up to the alignment
  uint64_t data_size = 0;       ///< the data section: every tensor padded to the alignment
};

/// The checks and layout shared by every writer; throws lowbit::Error before anything is written.
/// `set_file_keys`: set general.file_type and general.quantization_version.
inline GgufLayout plan_gguf(Metadata metadata, const std::vector<TensorSpec>& specs,
                            uint32_t alignment, std::optional<uint32_t> file_type,
                            bool set_file_keys) {
  GgufLayout l;
  // Tensors: names, shapes, and rows that fit the type's block.
  std::unordered_set<std::string> names;
  for (const auto& s : specs) {
    const std::string problem = tensor_name_problem(s.name);
    require(problem.empty(), "tensors: name {}", problem);
    require(names.insert(s.name).second, "tensors['{}']: duplicate tensor name", s.name);
    require(!s.ne.empty() && s.ne.size() <= kMaxDims, "tensors['{}'].ne: expected 1..{} dims, got {}",
            s.name, kMaxDims, s.ne.size());
    TensorInfo t;
    t.name = s.name;
    t.ne = s.ne;
    t.n_elements = 1;
    for (auto d : s.ne) {
      require(d >= 1 && d <= uint64_t(std::numeric_limits<int32_t>::max()),
              "tensors['{}'].ne: dimension {} is out of range (1..2^31-1)", s.name, d);
      require(t.n_elements <= uint64_t(std::numeric_limits<int64_t>::max()) / d,
              "tensors['{}'].ne: element count overflows", s.name);
      t.n_elements *= d;
    }
    const formats::TypeInfo* info = formats::find_type(uint32_t(s.type));
    require(info != nullptr, "tensors['{}'].type: {} is not a ggml tensor type", s.name,
            uint32_t(s.type));
    t.type = s.type;
    require(s.ne[0] % info->block_size == 0,
            "tensors['{}']: row length {} does not fit {} (blocks of {}); types that fit: {}",
            s.name, s.ne[0], info->name, info->block_size, types_fitting(s.ne[0]));
    require(t.n_elements / info->block_size <=
                uint64_t(std::numeric_limits<int64_t>::max()) / info->type_size,
            "tensors['{}']: byte size overflows", s.name);
    t.n_bytes = t.n_elements / info->block_size * info->type_size;
    l.tensors.push_back(std::move(t));
  }
  // Metadata: keys and values.
  std::unordered_set<std::string> keys;
  for (const auto& [key, v] : metadata) {
    const std::string problem = key_problem(key);
    require(problem.empty(), "metadata: key {}", problem);
    require(keys.insert(key).second, "metadata['{}']: duplicate key", key);
    check_value(v, key, 0);
  }
  if (const Value* a = find_value(metadata, "general.alignment")) {
    require(a->type == ValueType::UInt32 && a->u > 0 && (a->u & (a->u - 1)) == 0,
            "metadata['general.alignment']: expected a uint32 power of two, got {} {}",
            to_string(a->type), a->type == ValueType::UInt32 ? a->u : 0);
    require(alignment == 0 || a->u == alignment,
            "metadata['general.alignment']: {} differs from the alignment option {}", a->u,
            alignment);
    l.alignment = uint32_t(a->u);
  } else {
    require(alignment == 0 || (alignment & (alignment - 1)) == 0,
            "alignment: expected a power of two, got {}", alignment);
    if (alignment != 0) l.alignment = alignment;
    if (l.alignment != kDefaultAlignment)
      metadata.emplace_back("general.alignment", Value::of_uint32(l.alignment));
  }
  if (set_file_keys) {
    if (!file_type) {
      std::vector<std::pair<std::string, formats::Type>> types;
      for (const auto& t : l.tensors) types.emplace_back(t.name, t.type);
      file_type = uint32_t(guess_file_type(std::move(types)));
    }
    set_value(metadata, "general.quantization_version", Value::of_uint32(kQuantizationVersion));
    set_value(metadata, "general.file_type", Value::of_uint32(*file_type));
  }
  // Offsets: each tensor starts where the previous one's padded bytes end (as ggml lays them).
  for (auto& t : l.tensors) {
    t.offset = l.data_size;
    l.data_size += align_up(t.n_bytes, l.alignment);
  }
  std::vector<uint8_t>& h = l.header;
  h.insert(h.end(), {'G', 'G', 'U', 'F'});
  put<uint32_t>(h, 3);
  put<uint64_t>(h, l.tensors.size());
  put<uint64_t>(h, metadata.size());
  for (const auto& [key, v] : metadata) {
    put_string(h, key);
    put<uint32_t>(h, uint32_t(v.type));
    put_value(h, v);
  }
  for (const auto& t : l.tensors) {
    put_string(h, t.name);
    put<uint32_t>(h, uint32_t(t.ne.size()));
    for (auto d : t.ne) put<uint64_t>(h, d);
    put<uint32_t>(h, uint32_t(t.type));
    put<uint64_t>(h, t.offset);
  }
  l.data_offset = align_up(h.size(), l.alignment);
  l.metadata = std::move(metadata);
  return l;
}

inline std::vector<TensorSpec> specs_of(const std::vector<TensorData>& tensors) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& t : tensors) specs.push_back(t);
  return specs;
}

inline std::vector<TensorData> f32_data(const std::vector<TensorF32>& tensors) {
  std::vector<TensorData> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) {
    TensorData d;
    d.name = t.name;
    d.ne = t.ne;
    d.type = TensorType::F32;
    uint64_t n = 1;
    for (auto x : t.ne) n *= x;
    require(t.ne.empty() || n == t.data.size(), "tensors['{}'].data: expected {} floats, got {}",
            t.name, n, t.data.size());
    d.bytes.resize(4 * t.data.size());
    if (!t.data.empty()) std::memcpy(d.bytes.data(), t.data.data(), d.bytes.size());
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace detail

/// Streams a GGUF v3 file: all tensor infos are given up front (so their offsets are known), the
/// header is written on construction, then each tensor's bytes in order as it is finished, and
/// finish() renames the temporary `<path>.tmp-<pid>-<n>` onto `path`.
///
/// Everything is checked before the temporary is created: tensor names (non-empty, at most 63
/// bytes, unique), shapes, rows that fit the type's block (the error names the tensor, its row
/// length and the types that fit), metadata keys (printable ASCII, unique) and values, the
/// alignment, and `path` (not an input, its folder writable). The metadata keeps its order;
/// general.quantization_version (2) and general.file_type are replaced in place or appended.
/// Any failure after that (a wrong byte count, a tensor out of order, a failed write), and
/// destruction without finish(), remove the temporary: `path` never holds a partial file, and an
/// existing file there is untouched until finish().
class GgufWriter {
 public:
  GgufWriter(std::string path, Metadata metadata, const std::vector<TensorSpec>& tensors,
             const WriteOptions& options = {})
      : GgufWriter(std::move(path),
                   detail::plan_gguf(std::move(metadata), tensors, options.alignment,
                                     options.file_type, true),
                   options.inputs) {}

  GgufWriter(GgufWriter&&) noexcept = default;
  GgufWriter& operator=(GgufWriter&&) noexcept = default;
  ~GgufWriter() = default;  // the OutputFile removes an unfinished temporary

  /// The metadata as written (general.file_type, quantization_version, alignment included).
  const Metadata& metadata() const { return layout_.metadata; }
  /// The tensor infos as written (offsets relative to the data section, exact byte sizes).
  const std::vector<TensorInfo>& tensors() const { return layout_.tensors; }
  uint32_t alignment() const { return layout_.alignment; }
  /// File offset of the data section.
  uint64_t data_offset() const { return layout_.data_offset; }
  /// The size of the finished file.
  uint64_t file_size() const { return layout_.data_offset + layout_.data_size; }
  /// Sum of the tensors' stored bytes (without padding).
  uint64_t tensor_bytes() const {
    uint64_t n = 0;
    for (const auto& t : layout_.tensors) n += t.n_bytes;
    return n;
  }
  /// The tensor whose bytes come next, or nullptr when all are written.
  const TensorInfo* next() const {
    return next_ < layout_.tensors.size() ? &layout_.tensors[next_] : nullptr;
  }
  /// The final path and the temporary being written (empty once finished or aborted).
  const std::string& path() const { return path_; }
  std::string temp_path() const { return file_ ? file_->temp_path() : std::string(); }

  /// Writes all bytes of tensor `name`, which must be the next one, exactly n_bytes of them.
  void write_tensor(const std::string& name, const void* data, uint64_t n_bytes) {
    guarded([&] {
      const TensorInfo* t = next();
      detail::require(t != nullptr, "write_tensor('{}'): all {} tensors are already written", name,
                      layout_.tensors.size());
      detail::require(t->name == name, "write_tensor('{}'): expected tensor '{}' next", name,
                      t->name);
      detail::require(written_ == 0, "write_tensor('{}'): {} bytes of it were already appended",
                      name, written_);
      detail::require(n_bytes == t->n_bytes,
                      "write_tensor('{}'): expected {} bytes ({} x {} {}), got {}", name,
                      t->n_bytes, t->rows(), t->cols(), formats::to_string(t->type), n_bytes);
      append_unchecked(data, n_bytes);
    });
  }
  void write_tensor(const std::string& name, ByteView bytes) {
    write_tensor(name, bytes.data, bytes.size);
  }
  void write_tensor(const std::string& name, const std::vector<uint8_t>& bytes) {
    write_tensor(name, bytes.data(), bytes.size());
  }

  /// Appends `n_bytes` of the next tensor (a tensor may come in several parts, e.g. row by row);
  /// a part may not run past the tensor's end.
  void append(const void* data, uint64_t n_bytes) {
    guarded([&] {
      const TensorInfo* t = next();
      detail::require(t != nullptr, "append: all {} tensors are already written",
                      layout_.tensors.size());
      detail::require(n_bytes <= t->n_bytes - written_,
                      "append: {} bytes run past the end of tensor '{}' ({} of {} bytes written)",
                      n_bytes, t->name, written_, t->n_bytes);
      append_unchecked(data, n_bytes);
    });
  }

  /// Checks that every tensor was written, flushes, and renames the temporary onto `path`.
  void finish() {
    guarded([&] {
      const TensorInfo* t = next();
      detail::require(t == nullptr, "finish: tensor '{}' ({} of {}) is not complete ({} of {} "
                      "bytes written)", t ? t->name : "", next_ + 1, layout_.tensors.size(),
                      written_, t ? t->n_bytes : 0);
      file_->commit();
    });
    file_.reset();
  }

 private:
  GgufWriter(std::string path, detail::GgufLayout layout, const std::vector<std::string>& inputs)
      : path_(std::move(path)), layout_(std::move(layout)) {
    file_ = std::make_unique<OutputFile>(path_, inputs);
    file_->write(layout_.header.data(), layout_.header.size());
    file_->write_zeros(size_t(layout_.data_offset - layout_.header.size()));
    advance();
  }

  template <class F>
  void guarded(F&& f) {
    detail::require(file_ != nullptr, "gguf writer for '{}': already finished or aborted by an "
                    "earlier error", path_);
    try {
      f();
    } catch (...) {
      file_.reset();  // removes the temporary
      throw;
    }
  }

  void append_unchecked(const void* data, uint64_t n) {
    detail::require(data != nullptr || n == 0, "data: expected bytes, got nullptr");
    file_->write(data, size_t(n));
    written_ += n;
    advance();
  }

  /// Pads and moves on past every complete tensor.
  void advance() {
    while (next_ < layout_.tensors.size() && written_ == layout_.tensors[next_].n_bytes) {
      const uint64_t n = layout_.tensors[next_].n_bytes;
      file_->write_zeros(size_t(detail::align_up(n, layout_.alignment) - n));
      ++next_;
      written_ = 0;
    }
  }

  std::string path_;
  detail::GgufLayout layout_;
  std::unique_ptr<OutputFile> file_;
  size_t next_ = 0;        ///< index of the tensor being written
  uint64_t written_ = 0;   ///< its bytes written so far
};

namespace detail {

inline void check_bytes(const GgufLayout& l, const std::vector<TensorData>& tensors) {
  for (size_t k = 0; k < tensors.size(); ++k)
    require(tensors[k].bytes.size() == l.tensors[k].n_bytes,
            "tensors['{}'].bytes: expected {} bytes ({} x {} {}), got {}", tensors[k].name,
            l.tensors[k].n_bytes, l.tensors[k].rows(), l.tensors[k].cols(),
            formats::to_string(l.tensors[k].type), tensors[k].bytes.size());
}

inline std::vector<uint8_t> serialize(const GgufLayout& l, const std::vector<TensorData>& tensors) {
  check_bytes(l, tensors);
  std::vector<uint8_t> out(l.header);
  out.reserve(size_t(l.data_offset + l.data_size));
  out.resize(size_t(l.data_offset), 0);
  for (const auto& t : tensors) {
    out.insert(out.end(), t.bytes.begin(), t.bytes.end());
    out.resize(size_t(align_up(out.size(), l.alignment)), 0);
  }
  return out;
}

inline void write(const std::string& path, const GgufLayout& l,
                  const std::vector<TensorData>& tensors, const std::vector<std::string>& inputs) {
  check_bytes(l, tensors);
  OutputFile f(path, inputs);
  f.write(l.header.data(), l.header.size());
  f.write_zeros(size_t(l.data_offset - l.header.size()));
  for (const auto& t : tensors) {
    f.write(t.bytes.data(), t.bytes.size());
    f.write_zeros(size_t(align_up(t.bytes.size(), l.alignment) - t.bytes.size()));
  }
  f.commit();
}

}  // namespace detail

/// The bytes of a GGUF v3 file holding `tensors` (any mix of types), as GgufWriter writes it.
inline std::vector<uint8_t> serialize_gguf(const Metadata& metadata,
                                           const std::vector<TensorData>& tensors,
                                           const WriteOptions& options = {}) {
  return detail::serialize(detail::plan_gguf(metadata, detail::specs_of(tensors), options.alignment,
                                             options.file_type, true),
                           tensors);
}

/// Writes a GGUF v3 file holding `tensors` to `path` (temporary file, then rename).
inline void write_gguf(const std::string& path, const Metadata& metadata,
                       const std::vector<TensorData>& tensors, const WriteOptions& options = {}) {
  detail::write(path,
                detail::plan_gguf(metadata, detail::specs_of(tensors), options.alignment,
                                  options.file_type, true),
                tensors, options.inputs);
}

/// Writes a GGUF v3 file whose tensors' bytes come from `produce(index, info, out)`, called once
/// per tensor in order with a buffer of info.n_bytes to fill (one tensor in memory at a time).
inline void write_gguf(const std::string& path, const Metadata& metadata,
                       const std::vector<TensorSpec>& tensors,
                       const std::function<void(size_t, const TensorInfo&, uint8_t*)>& produce,
                       const WriteOptions& options = {}) {
  GgufWriter w(path, metadata, tensors, options);
  std::vector<uint8_t> buf;
  for (size_t k = 0; k < w.tensors().size(); ++k) {
    const TensorInfo& t = w.tensors()[k];
    buf.assign(size_t(t.n_bytes), 0);
    produce(k, t, buf.data());
    w.write_tensor(t.name, buf);
  }
  w.finish();
}

/// F32 tensors with `metadata` exactly as given (no file-type keys added), aligned to
/// `alignment` (stored as general.alignment when it is not 32).
inline std::vector<uint8_t> serialize_gguf(const Metadata& metadata,
                                           const std::vector<TensorF32>& tensors,
                                           uint32_t alignment = kDefaultAlignment) {
  detail::require(alignment > 0, "alignment: expected a power of two, got {}", alignment);
  const auto data = detail::f32_data(tensors);
  return detail::serialize(
      detail::plan_gguf(metadata, detail::specs_of(data), alignment, std::nullopt, false), data);
}

/// Writes serialize_gguf(metadata, tensors, alignment) to `path` (temporary file, then rename).
inline void write_gguf(const std::string& path, const Metadata& metadata,
                       const std::vector<TensorF32>& tensors, uint32_t alignment = kDefaultAlignment) {
  detail::require(alignment > 0, "alignment: expected a power of two, got {}", alignment);
  const auto data = detail::f32_data(tensors);
  detail::write(path,
                detail::plan_gguf(metadata, detail::specs_of(data), alignment, std::nullopt, false),
                data, {});
}

}  // namespace lowbit::io
