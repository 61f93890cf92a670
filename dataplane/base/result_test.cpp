#include "dataplane/base/result.h"

#include <gtest/gtest.h>

namespace portcullis {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0) return fail_invalid("value " + std::to_string(v) + " must be positive");
  return v;
}

TEST(Result, CarriesErrnoAndContext) {
  auto r = parse_positive(-1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EINVAL);
  EXPECT_EQ(r.error().message(), "value -1 must be positive: Invalid argument");
  EXPECT_EQ(*parse_positive(3), 3);
}

TEST(Result, WrapAddsOuterContext) {
  Error e = Error::from_errno(-ENODEV, "read state").wrap("device 'pcl0'");
  EXPECT_EQ(e.errno_value(), ENODEV);
  EXPECT_EQ(e.message(), "device 'pcl0': read state: No such device");
}

}  // namespace
}  // namespace portcullis
