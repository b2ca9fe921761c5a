// file_type.hpp: llama.cpp's `general.file_type` values (llama_ftype) and how its loader guesses one.
#pragma once

#include <lowbit/formats/type.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lowbit::io {

/// llama.cpp's llama_ftype: what `general.file_type` holds (the values of include/llama.h; 4..6
/// and 33..35 were removed). Writers take a plain uint32, so values newer than this list pass too.
enum class FileType : uint32_t {
  ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q4_0 = 2, MOSTLY_Q4_1 = 3, MOSTLY_Q8_0 = 7,
  MOSTLY_Q5_0 = 8, MOSTLY_Q5_1 = 9, MOSTLY_Q2_K = 10, MOSTLY_Q3_K_S = 11, MOSTLY_Q3_K_M = 12,
  MOSTLY_Q3_K_L = 13, MOSTLY_Q4_K_S = 14, MOSTLY_Q4_K_M = 15, MOSTLY_Q5_K_S = 16,
  MOSTLY_Q5_K_M = 17, MOSTLY_Q6_K = 18, MOSTLY_IQ2_XXS = 19, MOSTLY_IQ2_XS = 20,
  MOSTLY_Q2_K_S = 21, MOSTLY_IQ3_XS = 22, MOSTLY_IQ3_XXS = 23, MOSTLY_IQ1_S = 24,
  MOSTLY_IQ4_NL = 25, MOSTLY_IQ3_S = 26, MOSTLY_IQ3_M = 27, MOSTLY_IQ2_S = 28, MOSTLY_IQ2_M = 29,
  MOSTLY_IQ4_XS = 30, MOSTLY_IQ1_M = 31, MOSTLY_BF16 = 32, MOSTLY_TQ1_0 = 36, MOSTLY_TQ2_0 = 37,
  MOSTLY_MXFP4_MOE = 38, MOSTLY_NVFP4 = 39, MOSTLY_Q1_0 = 40, MOSTLY_Q2_0 = 41,
};

/// The file type llama.cpp's loader reports for a file whose most common tensor type is `t`
/// (Q3_K, Q4_K and Q5_K map to their _M mixes); ALL_F32 for types it has no file type for.
inline FileType file_type_for(formats::Type t) {
  using formats::Type;
  switch (t) {
    case Type::F32: return FileType::ALL_F32;
    case Type::F16: return FileType::MOSTLY_F16;
    case Type::BF16: return FileType::MOSTLY_BF16;
    case Type::Q4_0: return FileType::MOSTLY_Q4_0;
    case Type::Q4_1: return FileType::MOSTLY_Q4_1;
    case Type::Q5_0: return FileType::MOSTLY_Q5_0;
    case Type::Q5_1: return FileType::MOSTLY_Q5_1;
    case Type::Q8_0: return FileType::MOSTLY_Q8_0;
    case Type::Q2_K: return FileType::MOSTLY_Q2_K;
    case Type::Q3_K: return FileType::MOSTLY_Q3_K_M;
    case Type::Q4_K: return FileType::MOSTLY_Q4_K_M;
    case Type::Q5_K: return FileType::MOSTLY_Q5_K_M;
    case Type::Q6_K: return FileType::MOSTLY_Q6_K;
    case Type::TQ1_0: return FileType::MOSTLY_TQ1_0;
    case Type::TQ2_0: return FileType::MOSTLY_TQ2_0;
    case Type::IQ2_XXS: return FileType::MOSTLY_IQ2_XXS;
    case Type::IQ2_XS: return FileType::MOSTLY_IQ2_XS;
    case Type::IQ2_S: return FileType::MOSTLY_IQ2_S;
    case Type::IQ3_XXS: return FileType::MOSTLY_IQ3_XXS;
    case Type::IQ1_S: return FileType::MOSTLY_IQ1_S;
    case Type::IQ1_M: return FileType::MOSTLY_IQ1_M;
    case Type::IQ4_NL: return FileType::MOSTLY_IQ4_NL;
    case Type::IQ4_XS: return FileType::MOSTLY_IQ4_XS;
    case Type::IQ3_S: return FileType::MOSTLY_IQ3_S;
    case Type::NVFP4: return FileType::MOSTLY_NVFP4;
    case Type::Q1_0: return FileType::MOSTLY_Q1_0;
    case Type::Q2_0: return FileType::MOSTLY_Q2_0;
    default: return FileType::ALL_F32;
  }
}

/// The file type llama.cpp's loader guesses for a file without `general.file_type`: the type held
/// by the most tensors (ties: the one reaching the count first in name order), via file_type_for.
/// `tensors` holds (name, type) pairs.
inline FileType guess_file_type(std::vector<std::pair<std::string, formats::Type>> tensors) {
  std::sort(tensors.begin(), tensors.end());
  std::map<formats::Type, uint32_t> count;
  uint32_t best = 0;
  formats::Type best_type = formats::Type::F32;
  for (const auto& [name, type] : tensors)
    if (++count[type] > best) {
      best = count[type];
      best_type = type;
    }
  return file_type_for(best_type);
}

}  // namespace lowbit::io
