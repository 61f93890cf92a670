#include "controlplane/api/json_input.h"

#include <algorithm>

namespace portcullis::api {
namespace {

using nlohmann::json;

tl::unexpected<InputError> bad(std::string_view field, std::string message) {
  return tl::unexpected(InputError{std::string(field), std::move(message)});
}

// Deepest [ / { nesting outside strings; stops counting past `limit`.
int nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

const char* type_name(FieldType t) {
  switch (t) {
    case FieldType::kString:
      return "a string";
    case FieldType::kInteger:
      return "an integer";
    case FieldType::kBool:
      return "a boolean";
    case FieldType::kObject:
      return "an object";
    case FieldType::kArray:
      return "an array";
  }
  return "?";
}

bool has_type(const json& v, FieldType t) {
  switch (t) {
    case FieldType::kString:
      return v.is_string();
    case FieldType::kInteger:
      return v.is_number_integer();
    case FieldType::kBool:
      return v.is_boolean();
    case FieldType::kObject:
      return v.is_object();
    case FieldType::kArray:
      return v.is_array();
  }
  return false;
}

}  // namespace

std::int64_t get_int(const json& object, std::string_view name) {
  const json& v = object.at(std::string(name));
  if (v.is_number_unsigned()) return static_cast<std::int64_t>(v.get<std::uint64_t>());
  return v.get<std::int64_t>();
}

Checked<std::string> dump_json(const json& value) {
  try {
    return value.dump();
  } catch (const json::exception&) {
    return bad("", "strings must be valid UTF-8");
  }
}

Checked<void> check_object(const json& value, std::span<const FieldRule> rules) {
  if (!value.is_object()) return bad("", "the body must be a JSON object");
  for (const auto& [name, field] : value.items()) {
    if (std::none_of(rules.begin(), rules.end(),
                     [&](const FieldRule& r) { return r.name == name; })) {
      return bad(name, "unknown field '" + name + "': remove it");
    }
  }
  for (const FieldRule& rule : rules) {
    const auto it = value.find(std::string(rule.name));
    if (it == value.end() || it->is_null()) {
      if (rule.required) return bad(rule.name, "missing required field");
      continue;
    }
    if (it->is_number_float() || !has_type(*it, rule.type)) {
      return bad(rule.name, std::string("must be ") + type_name(rule.type));
    }
    const FieldLimits& lim = rule.limits;
    switch (rule.type) {
      case FieldType::kString: {
        const auto& s = it->get_ref<const std::string&>();
        if (s.size() > lim.max_bytes) {
          return bad(rule.name, "longer than " + std::to_string(lim.max_bytes) + " bytes");
        }
        if (s.size() < lim.min_bytes) {
          return bad(rule.name, "shorter than " + std::to_string(lim.min_bytes) + " bytes");
        }
        break;
      }
      case FieldType::kInteger: {
        bool in_range;
        if (it->is_number_unsigned()) {
          const auto u = it->get<std::uint64_t>();
          in_range = lim.max >= 0 && u <= static_cast<std::uint64_t>(lim.max) &&
                     (lim.min <= 0 || u >= static_cast<std::uint64_t>(lim.min));
        } else {
          const auto i = it->get<std::int64_t>();
          in_range = i >= lim.min && i <= lim.max;
        }
        if (!in_range) {
          return bad(rule.name, "out of range [" + std::to_string(lim.min) + ", " +
                                    std::to_string(lim.max) + "]");
        }
        break;
      }
      case FieldType::kObject:
      case FieldType::kArray: {
        if (has_float(*it)) return bad(rule.name, "floating-point numbers are not accepted");
        auto text = dump_json(*it);
        if (!text) return bad(rule.name, text.error().message);
        if (text->size() > lim.max_bytes) {
          return bad(rule.name, "larger than " + std::to_string(lim.max_bytes) + " bytes");
        }
        break;
      }
      case FieldType::kBool:
        break;
    }
  }
  return {};
}

Checked<json> parse_object(std::string_view body, std::span<const FieldRule> rules) {
  if (nesting_depth(body, kMaxJsonDepth) > kMaxJsonDepth) {
    return bad("", "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  json value = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return bad("", "the body is not valid JSON");
  if (auto ok = check_object(value, rules); !ok) return tl::unexpected(std::move(ok.error()));
  return value;
}

bool has_float(const json& v) {
  if (v.is_number_float()) return true;
  if (v.is_structured()) {
    for (const auto& item : v) {
      if (has_float(item)) return true;
    }
  }
  return false;
}

}  // namespace portcullis::api
