#pragma once
// Strict JSON input. Each endpoint states its fields once, in a table, before any logic runs:
//
//   constexpr FieldRule kHeartbeat[] = {
//       {"rx_bytes", FieldType::kInteger, kOptional, {.min = 0}},
//       {"hostname", FieldType::kString, kRequired, {.max_bytes = 253}},
//   };
//   auto body = parse_object(request.body, kHeartbeat);  // InputError names the field
//
// Rejected: text that is not one JSON object; nesting deeper than kMaxJsonDepth; a field not in
// the table; a wrong type; a missing required field; a string or object (serialized) over its
// byte limit; an integer out of its range; floating-point numbers anywhere (no field needs them,
// and signed requests are hashed in canonical form, see agent_proof.h).

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

namespace portcullis::api {

inline constexpr int kMaxJsonDepth = 8;

// kArray: any JSON array, limited by its serialized size; the handler checks the items.
enum class FieldType { kString, kInteger, kBool, kObject, kArray };
inline constexpr bool kRequired = true;
inline constexpr bool kOptional = false;

struct FieldLimits {
  std::size_t min_bytes = 0;    // strings
  std::size_t max_bytes = 256;  // strings: UTF-8 bytes; objects and arrays: serialized bytes
  std::int64_t min = std::numeric_limits<std::int64_t>::min();  // integers
  std::int64_t max = std::numeric_limits<std::int64_t>::max();
};

struct FieldRule {
  std::string_view name;
  FieldType type;
  bool required;
  FieldLimits limits = {};
};

// The JSON error body's "field" and "message" (the code is "invalid_request").
struct InputError {
  std::string field;  // empty: the body as a whole
  std::string message;
};

template <class T>
using Checked = tl::expected<T, InputError>;

// Parses `body` and checks it against `rules`. Never throws.
Checked<nlohmann::json> parse_object(std::string_view body, std::span<const FieldRule> rules);

// Checks an already parsed value (exposed for tests and nested objects).
Checked<void> check_object(const nlohmann::json& value, std::span<const FieldRule> rules);

// Reads an integer field checked by check_object (nlohmann keeps non-negative values unsigned).
std::int64_t get_int(const nlohmann::json& object, std::string_view name);

// True if `v` holds a floating-point number anywhere (refused: their text form is not canonical).
bool has_float(const nlohmann::json& v);

// The JSON text of `value`, or an InputError for strings that are not valid UTF-8.
Checked<std::string> dump_json(const nlohmann::json& value);

}  // namespace portcullis::api
