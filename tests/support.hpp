// support.hpp: small helpers every test layer shares (bit comparisons, the shared model folder,
// the CPU flags Linux reports). Each layer's tests build as one program, so they live here once.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

namespace lowbit::test {

/// The bits of `x` (to compare floats exactly, signed zeros and NaN payloads included).
inline uint32_t float_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

/// True when two float matrices (any Eigen dense types) have the same shape and the same bits.
template <class A, class B>
bool same_bits(const A& a, const B& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * size_t(a.size())) == 0;
}

#ifdef LOWBIT_SHARED_DIR
/// `rel` inside the shared folder of models and text beside the project.
inline std::string shared(const std::string& rel) { return std::string(LOWBIT_SHARED_DIR) + "/" + rel; }

/// The shared real model and text.
inline std::string stories_model() { return shared("models/stories260K.gguf"); }
inline std::string stories_text() { return shared("data/tinystories_val.txt"); }
#endif

/// True when `path` can be opened for reading.
inline bool have(const std::string& path) { return bool(std::ifstream(path)); }

/// The flags Linux reports for the first CPU in /proc/cpuinfo, with a trailing space (empty where
/// there is none): an independent view of what the CPU and the kernel support.
inline std::string cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) return line + " ";
  return "";
}

/// True when Linux lists `flag` for the CPU (false where there is no /proc/cpuinfo).
inline bool cpuinfo_has(const std::string& flag) {
  return cpuinfo_flags().find(" " + flag + " ") != std::string::npos;
}

}  // namespace lowbit::test
