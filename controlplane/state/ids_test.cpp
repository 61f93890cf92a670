#include "controlplane/state/ids.h"

#include <set>

#include <gtest/gtest.h>

namespace portcullis::state {
namespace {

TEST(RandomId, IsUrlSafeBase32OfSixteenBytes) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = random_id();
    ASSERT_EQ(id.size(), 26u);
    for (char c : id) {
      EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')) << id;
    }
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(ShortId, CutsLongIds) {
  EXPECT_EQ(short_id("abcdefghijklmnop"), "abcdefgh…");
  EXPECT_EQ(short_id("abc"), "abc");
}

TEST(Sha256, KnownVector) {
  // SHA-256("abc"), FIPS 180-2 appendix B.1.
  auto h = sha256("abc");
  const std::uint8_t want[] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                               0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                               0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  EXPECT_TRUE(std::equal(h.begin(), h.end(), std::begin(want)));
}

}  // namespace
}  // namespace portcullis::state
