// fuzz_gguf.cpp: libFuzzer target for the GGUF reader; any input must parse or throw lowbit::Error.
// Built by scripts/test.sh with clang++-14 -fsanitize=fuzzer,address,undefined.
#include <lowbit/io/gguf.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = lowbit::io::GgufFile::from_bytes(data, size);
    for (const auto& [key, value] : f.metadata()) {
      if (value.is_integer()) (void)f.get_int(key, 0);
    }
    for (const auto& t : f.tensors()) {
      if (t.n_elements > (1u << 22)) continue;  // valid but big: reading it only costs time
      try {
        (void)f.read(t);
      } catch (const lowbit::Error&) {
      }
    }
  } catch (const lowbit::Error&) {
  }
  return 0;
}
