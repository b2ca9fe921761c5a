// value.hpp: GGUF metadata values (scalars, strings, nested arrays) and ordered metadata lists.
#pragma once

#include <lowbit/core/error.hpp>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lowbit::io {

/// Metadata value types, with their GGUF type ids.
enum class ValueType : uint32_t {
  UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
  String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
};

/// Name of a value type, for messages.
inline std::string_view to_string(ValueType t) {
  static constexpr std::string_view names[] = {"uint8", "int8",  "uint16", "int16", "uint32",
                                               "int32", "float32", "bool", "string", "array",
                                               "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : std::string_view("unknown");
}

/// One metadata value: a scalar, a string, or an array of values of one type.
/// Unsigned integers and bool live in `u`, signed integers in `i`, floats in `f` (a float32 value
/// is held exactly as a double), strings in `s`, array elements in `array`.
struct Value {
  ValueType type = ValueType::UInt8;
  ValueType element_type = ValueType::UInt8;  ///< arrays only
  uint64_t u = 0;                             ///< unsigned integers and bool
  int64_t i = 0;                              ///< signed integers
  double f = 0.0;                             ///< float32 / float64
  std::string s;
  std::vector<Value> array;

  static Value of_uint8(uint8_t x) { return unsigned_of(ValueType::UInt8, x); }
  static Value of_int8(int8_t x) { return signed_of(ValueType::Int8, x); }
  static Value of_uint16(uint16_t x) { return unsigned_of(ValueType::UInt16, x); }
  static Value of_int16(int16_t x) { return signed_of(ValueType::Int16, x); }
  static Value of_uint32(uint32_t x) { return unsigned_of(ValueType::UInt32, x); }
  static Value of_int32(int32_t x) { return signed_of(ValueType::Int32, x); }
  static Value of_uint64(uint64_t x) { return unsigned_of(ValueType::UInt64, x); }
  static Value of_int64(int64_t x) { return signed_of(ValueType::Int64, x); }
  static Value of_float32(float x) { Value v; v.type = ValueType::Float32; v.f = x; return v; }
  static Value of_float64(double x) { Value v; v.type = ValueType::Float64; v.f = x; return v; }
  static Value of_bool(bool x) { Value v; v.type = ValueType::Bool; v.u = x; return v; }
  static Value of_string(std::string x) {
    Value v; v.type = ValueType::String; v.s = std::move(x); return v;
  }
  /// An array of `element_type`; every element must have that type (checked when written).
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
    lowbit::detail::require(is_integer(), "gguf value: expected an integer, got {}", to_string(type));
    if (!is_unsigned()) return i;
    lowbit::detail::require(u <= uint64_t(std::numeric_limits<int64_t>::max()),
                    "gguf value: {} does not fit int64", u);
    return static_cast<int64_t>(u);
  }
  /// float32 / float64 (or an integer) as double.
  double as_float() const {
    if (type == ValueType::Float32 || type == ValueType::Float64) return f;
    return static_cast<double>(as_int());
  }
  bool as_bool() const {
    lowbit::detail::require(type == ValueType::Bool, "gguf value: expected bool, got {}", to_string(type));
    return u != 0;
  }
  const std::string& as_string() const {
    lowbit::detail::require(type == ValueType::String, "gguf value: expected string, got {}",
                    to_string(type));
    return s;
  }
  const std::vector<Value>& as_array() const {
    lowbit::detail::require(type == ValueType::Array, "gguf value: expected array, got {}",
                    to_string(type));
    return array;
  }

 private:
  static Value unsigned_of(ValueType t, uint64_t x) { Value v; v.type = t; v.u = x; return v; }
  static Value signed_of(ValueType t, int64_t x) { Value v; v.type = t; v.i = x; return v; }
};

/// Identical values: same type and the same stored content (floats compared by their bits, so a
/// NaN equals the same NaN and 0.0 differs from -0.0); arrays element by element.
inline bool operator==(const Value& a, const Value& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case ValueType::UInt8: case ValueType::UInt16: case ValueType::UInt32: case ValueType::UInt64:
    case ValueType::Bool:
      return a.u == b.u;
    case ValueType::Int8: case ValueType::Int16: case ValueType::Int32: case ValueType::Int64:
      return a.i == b.i;
    case ValueType::Float32: case ValueType::Float64:
      return std::memcmp(&a.f, &b.f, sizeof(double)) == 0;
    case ValueType::String:
      return a.s == b.s;
    case ValueType::Array:
      return a.element_type == b.element_type && a.array == b.array;
  }
  return false;
}
inline bool operator!=(const Value& a, const Value& b) { return !(a == b); }

/// Metadata in file order: (key, value) pairs.
using Metadata = std::vector<std::pair<std::string, Value>>;

/// The value of `key` in `m`, or nullptr.
inline const Value* find_value(const Metadata& m, std::string_view key) {
  for (const auto& kv : m)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

/// Sets `key` to `v`: replaces the value in place (keeping the key's position) or appends it.
inline void set_value(Metadata& m, std::string_view key, Value v) {
  for (auto& kv : m)
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  m.emplace_back(std::string(key), std::move(v));
}

/// Removes `key` from `m`; returns whether it was present.
inline bool remove_value(Metadata& m, std::string_view key) {
  for (auto it = m.begin(); it != m.end(); ++it)
    if (it->first == key) {
      m.erase(it);
      return true;
    }
  return false;
}

}  // namespace lowbit::io
