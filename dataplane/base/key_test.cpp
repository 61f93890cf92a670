#include "dataplane/base/key.h"

#include <gtest/gtest.h>

#include <sstream>

namespace portcullis {
namespace {

// A key pair produced by `wg genkey | tee priv | wg pubkey`.
constexpr const char* kPriv = "MOdTYPIBxl6f/HrprAX/voDdW0ZyVjz8zPuaeF2E124=";
constexpr const char* kPub = "KisnoSbdBp6inx9iIMik3F/j/wNlvmKYrZFoMj0Vlmw=";

TEST(Key, RoundTripsBase64) {
  auto k = Key::from_base64(kPub);
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_EQ(k->to_base64(), kPub);
  EXPECT_EQ(k->short_name(), "KisnoSbd");
}

TEST(Key, PublicKeyOfPrivateKeyMatchesWg) {
  auto priv = SecretKey::from_base64(kPriv);
  ASSERT_TRUE(priv);
  EXPECT_EQ(priv->public_key().to_base64(), kPub);
}

TEST(Key, RejectsWrongLength) {
  auto k = Key::from_base64("KisnoSbdBp6inx9iIMik3F/j/wNlvmKYrZFoMj0Vlm=");
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().errno_value(), EINVAL);
  EXPECT_NE(k.error().context().find("44"), std::string::npos);
  EXPECT_FALSE(Key::from_base64(""));
  EXPECT_FALSE(Key::from_base64(std::string(kPub) + "A"));
}

TEST(Key, RejectsBadCharacters) {
  std::string bad = kPub;
  bad[5] = '-';  // URL-safe alphabet is not WireGuard's
  auto k = Key::from_base64(bad);
  ASSERT_FALSE(k);
  EXPECT_NE(k.error().context().find("position 6"), std::string::npos);
  bad = kPub;
  bad[43] = 'A';
  EXPECT_FALSE(Key::from_base64(bad));
  bad = kPub;
  bad[10] = '=';
  EXPECT_FALSE(Key::from_base64(bad));
}

TEST(Key, RejectsNonZeroPaddingBits) {
  // 'w' (48) ends in binary 110000: fine. 'x' (49) sets a padding bit.
  std::string bad = kPub;
  ASSERT_EQ(bad[42], 'w');
  bad[42] = 'x';
  EXPECT_FALSE(Key::from_base64(bad));
}

TEST(Key, FromBytesChecksLength) {
  std::uint8_t buf[31] = {};
  EXPECT_FALSE(Key::from_bytes(buf));
  std::uint8_t ok[32] = {1};
  ASSERT_TRUE(Key::from_bytes(ok));
  EXPECT_FALSE(Key::from_bytes(ok)->is_zero());
}

TEST(SecretKey, NeverPrintsItself) {
  auto priv = SecretKey::from_base64(kPriv);
  ASSERT_TRUE(priv);
  std::ostringstream os;
  os << *priv;
  EXPECT_EQ(os.str().find("MOdT"), std::string::npos);
  EXPECT_EQ(os.str(), "(secret)");
}

TEST(SecretKey, GeneratedKeysAreClampedAndDistinct) {
  auto a = SecretKey::generate_private();
  auto b = SecretKey::generate_private();
  EXPECT_FALSE(a.equals(b));
  EXPECT_EQ(a.data()[0] & 7, 0);
  EXPECT_EQ(a.data()[31] & 0xc0, 0x40);
  auto round = SecretKey::from_base64(a.reveal_base64());
  ASSERT_TRUE(round);
  EXPECT_TRUE(round->equals(a));
  EXPECT_FALSE(a.public_key().is_zero());
}

}  // namespace
}  // namespace portcullis
