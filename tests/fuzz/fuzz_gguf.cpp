// fuzz_gguf.cpp: libFuzzer target for the GGUF reader and writer: any input must parse or throw
// lowbit::Error, and every file that parses must write back (GGUF v3) into a file that parses to
// the same metadata, tensor infos and tensor bytes.
// Built by scripts/test.sh with clang++-14 -fsanitize=fuzzer,address,undefined.
#include <lowbit/io/gguf.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

lowbit::io::Metadata without_file_keys(lowbit::io::Metadata m) {
  lowbit::io::remove_value(m, "general.file_type");
  lowbit::io::remove_value(m, "general.quantization_version");
  return m;
}

/// Writes `f` again and checks that nothing was lost; aborts (a fuzzer finding) otherwise.
void check_rewrite(const lowbit::io::GgufFile& f) {
  std::vector<lowbit::io::TensorData> tensors;
  for (const auto& t : f.tensors()) {
    const auto raw = f.raw(t);
    tensors.push_back({{t.name, t.ne, t.type}, {raw.data, raw.data + raw.size}});
  }
  lowbit::io::WriteOptions o;
  o.file_type = 1;
  const auto bytes = lowbit::io::serialize_gguf(f.metadata(), tensors, o);
  const auto g = lowbit::io::GgufFile::from_bytes(bytes.data(), bytes.size());
  if (without_file_keys(g.metadata()) != without_file_keys(f.metadata())) std::abort();
  if (g.alignment() != f.alignment() || g.tensors().size() != f.tensors().size()) std::abort();
  for (size_t k = 0; k < f.tensors().size(); ++k) {
    const auto& a = f.tensors()[k];
    const auto& b = g.tensors()[k];
    if (a.name != b.name || a.ne != b.ne || a.type != b.type || a.n_bytes != b.n_bytes) std::abort();
    if (b.offset % g.alignment() != 0) std::abort();
    if (std::memcmp(f.raw(a).data, g.raw(b).data, size_t(a.n_bytes)) != 0) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = lowbit::io::GgufFile::from_bytes(data, size);
    for (const auto& [key, value] : f.metadata()) {
      if (value.is_integer()) (void)f.get_int(key, 0);
    }
    uint64_t total = 0;
    for (const auto& t : f.tensors()) {
      total += t.n_elements;
      if (f.raw(t).size != t.n_bytes) std::abort();
      if (t.n_elements > (1u << 22)) continue;  // valid but big: reading it only costs time
      try {
        (void)f.read(t);
      } catch (const lowbit::Error&) {
      }
    }
    // (A valid but huge general.alignment makes the rewritten bytes huge: skipped.)
    if (total <= (1u << 24) && f.alignment() <= (1u << 16)) check_rewrite(f);
  } catch (const lowbit::Error&) {
  }
  return 0;
}
