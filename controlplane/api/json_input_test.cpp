#include "controlplane/api/json_input.h"

#include <gtest/gtest.h>

namespace portcullis::api {
namespace {

constexpr FieldRule kRules[] = {
    {"name", FieldType::kString, kRequired, {.min_bytes = 1, .max_bytes = 8}},
    {"count", FieldType::kInteger, kOptional, {.min = 0, .max = 1000}},
    {"flag", FieldType::kBool, kOptional},
    {"extra", FieldType::kObject, kOptional, {.max_bytes = 32}},
};

InputError error_of(std::string_view body) {
  auto r = parse_object(body, kRules);
  EXPECT_FALSE(r) << body;
  return r ? InputError{} : r.error();
}

TEST(JsonInput, AcceptsAValidObject) {
  auto r = parse_object(R"({"name":"a","count":7,"flag":true,"extra":{"k":"v"}})", kRules);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(get_int(*r, "count"), 7);
  EXPECT_TRUE(parse_object(R"({"name":"a","count":null})", kRules));  // null = absent
}

TEST(JsonInput, BadJsonAndNonObjects) {
  EXPECT_EQ(error_of("{").field, "");
  EXPECT_NE(error_of("{").message.find("not valid JSON"), std::string::npos);
  EXPECT_EQ(error_of("").field, "");
  EXPECT_NE(error_of("[1]").message.find("object"), std::string::npos);
  EXPECT_NE(error_of(R"("name")").message.find("object"), std::string::npos);
  EXPECT_NE(error_of(R"({"name":"a"} trailing)").message.find("not valid JSON"), std::string::npos);
  // Invalid UTF-8 inside a string.
  EXPECT_NE(error_of("{\"name\":\"\xff\"}").message.find("not valid JSON"), std::string::npos);
}

TEST(JsonInput, UnknownFieldIsNamed) {
  InputError e = error_of(R"({"name":"a","admin":true})");
  EXPECT_EQ(e.field, "admin");
  EXPECT_NE(e.message.find("unknown field"), std::string::npos);
}

TEST(JsonInput, WrongTypeIsNamed) {
  EXPECT_EQ(error_of(R"({"name":5})").field, "name");
  EXPECT_EQ(error_of(R"({"name":"a","count":"5"})").field, "count");
  EXPECT_EQ(error_of(R"({"name":"a","count":5.0})").field, "count");
  EXPECT_EQ(error_of(R"({"name":"a","flag":1})").field, "flag");
  EXPECT_EQ(error_of(R"({"name":"a","extra":[]})").field, "extra");
}

TEST(JsonInput, MissingRequiredIsNamed) {
  InputError e = error_of(R"({"count":1})");
  EXPECT_EQ(e.field, "name");
  EXPECT_NE(e.message.find("missing"), std::string::npos);
  EXPECT_EQ(error_of(R"({"name":null})").field, "name");
}

TEST(JsonInput, LimitsAreEnforced) {
  EXPECT_TRUE(parse_object(R"({"name":"12345678"})", kRules));
  EXPECT_EQ(error_of(R"({"name":"123456789"})").field, "name");
  EXPECT_EQ(error_of(R"({"name":""})").field, "name");
  EXPECT_EQ(error_of(R"({"name":"a","count":-1})").field, "count");
  EXPECT_EQ(error_of(R"({"name":"a","count":1001})").field, "count");
  EXPECT_EQ(error_of(R"({"name":"a","count":18446744073709551615})").field, "count");
  EXPECT_EQ(error_of(R"({"name":"a","extra":{"k":"0123456789012345678901234567"}})").field,
            "extra");
  EXPECT_EQ(error_of(R"({"name":"a","extra":{"k":1.5}})").field, "extra");
}

TEST(JsonInput, DeepNestingIsRefusedBeforeParsing) {
  std::string deep =
      R"({"name":"a","extra":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  InputError e = error_of(deep);
  EXPECT_NE(e.message.find("nested deeper"), std::string::npos);
  // Brackets inside strings do not count.
  EXPECT_TRUE(parse_object(R"({"name":"[[[[[[[[","extra":{"k":"{{{{{{{{{{"}})", kRules));
}

TEST(JsonInput, ArraysAreTypedAndLimitedBySize) {
  constexpr FieldRule kList[] = {{"items", FieldType::kArray, kRequired, {.max_bytes = 16}}};
  EXPECT_TRUE(parse_object(R"({"items":["a","b"]})", kList));
  auto not_array = parse_object(R"({"items":"a"})", kList);
  ASSERT_FALSE(not_array);
  EXPECT_EQ(not_array.error().field, "items");
  auto big = parse_object(R"({"items":["0123456789","0123456789"]})", kList);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().field, "items");
}

}  // namespace
}  // namespace portcullis::api
