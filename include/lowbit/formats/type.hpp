// type.hpp: ggml's tensor types: the ids GGUF files store, their names and block geometry.
#pragma once

#include <lowbit/core/error.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lowbit::formats {

/// Tensor types with the ids GGUF files store (ggml_type). Ids 4, 5 and 31..33, 36..38 were
/// removed from ggml and never appear in a valid file.
enum class Type : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41, Q2_0 = 42,
};

/// Geometry of one type: `block_size` elements take `type_size` bytes (1 element for plain types).
struct TypeInfo {
  Type type;
  std::string_view name;
  uint32_t block_size;
  uint32_t type_size;
  bool quantized;  ///< a block format (not F32/F16/BF16/F64 or an integer type)
};

namespace detail {

inline constexpr TypeInfo kTypes[] = {
    {Type::F32, "F32", 1, 4, false},          {Type::F16, "F16", 1, 2, false},
    {Type::Q4_0, "Q4_0", 32, 18, true},       {Type::Q4_1, "Q4_1", 32, 20, true},
    {Type::Q5_0, "Q5_0", 32, 22, true},       {Type::Q5_1, "Q5_1", 32, 24, true},
    {Type::Q8_0, "Q8_0", 32, 34, true},       {Type::Q8_1, "Q8_1", 32, 36, true},
    {Type::Q2_K, "Q2_K", 256, 84, true},      {Type::Q3_K, "Q3_K", 256, 110, true},
    {Type::Q4_K, "Q4_K", 256, 144, true},     {Type::Q5_K, "Q5_K", 256, 176, true},
    {Type::Q6_K, "Q6_K", 256, 210, true},     {Type::Q8_K, "Q8_K", 256, 292, true},
    {Type::IQ2_XXS, "IQ2_XXS", 256, 66, true}, {Type::IQ2_XS, "IQ2_XS", 256, 74, true},
    {Type::IQ3_XXS, "IQ3_XXS", 256, 98, true}, {Type::IQ1_S, "IQ1_S", 256, 50, true},
    {Type::IQ4_NL, "IQ4_NL", 32, 18, true},   {Type::IQ3_S, "IQ3_S", 256, 110, true},
    {Type::IQ2_S, "IQ2_S", 256, 82, true},    {Type::IQ4_XS, "IQ4_XS", 256, 136, true},
    {Type::I8, "I8", 1, 1, false},            {Type::I16, "I16", 1, 2, false},
    {Type::I32, "I32", 1, 4, false},          {Type::I64, "I64", 1, 8, false},
    {Type::F64, "F64", 1, 8, false},          {Type::IQ1_M, "IQ1_M", 256, 56, true},
    {Type::BF16, "BF16", 1, 2, false},        {Type::TQ1_0, "TQ1_0", 256, 54, true},
    {Type::TQ2_0, "TQ2_0", 256, 66, true},    {Type::MXFP4, "MXFP4", 32, 17, true},
    {Type::NVFP4, "NVFP4", 64, 36, true},     {Type::Q1_0, "Q1_0", 128, 18, true},
    {Type::Q2_0, "Q2_0", 64, 18, true},
};

}  // namespace detail

/// The geometry of type id `id`, or nullptr when ggml has no such type.
inline const TypeInfo* find_type(uint32_t id) noexcept {
  for (const TypeInfo& t : detail::kTypes)
    if (uint32_t(t.type) == id) return &t;
  return nullptr;
}

/// The geometry of `type`; throws lowbit::Error for a value that is not a ggml type.
inline const TypeInfo& info(Type type) {
  const TypeInfo* t = find_type(uint32_t(type));
  lowbit::detail::require(t != nullptr, "type: {} is not a ggml tensor type id", uint32_t(type));
  return *t;
}

/// "Q4_K", "F16", ...; "type<id>" for an id ggml does not know.
inline std::string to_string(Type type) {
  const TypeInfo* t = find_type(uint32_t(type));
  return t ? std::string(t->name) : "type" + std::to_string(uint32_t(type));
}

/// The type named `name` (as to_string() spells it, case-sensitive), if any.
inline std::optional<Type> parse_type(std::string_view name) noexcept {
  for (const TypeInfo& t : detail::kTypes)
    if (t.name == name) return t.type;
  return std::nullopt;
}

/// Bytes a row of `n` elements takes; throws lowbit::Error unless n is a multiple of the block.
inline uint64_t row_bytes(Type type, uint64_t n) {
  const TypeInfo& t = info(type);
  lowbit::detail::require(n % t.block_size == 0, "row of {} elements: {} needs a multiple of {}", n,
                          t.name, t.block_size);
  return n / t.block_size * t.type_size;
}

}  // namespace lowbit::formats
