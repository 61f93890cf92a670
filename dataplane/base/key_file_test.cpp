#include "dataplane/base/key_file.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace portcullis {
namespace {

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pcl-keyfile-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string dir_;
};

TEST_F(KeyFileTest, CreatesWith0600AndReadsBackTheSameKey) {
  std::string path = dir_ + "/wg.key";
  auto a = load_or_create_private_key(path);
  ASSERT_TRUE(a) << a.error().message();
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto b = load_or_create_private_key(path);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_TRUE(a->equals(*b));
}

TEST_F(KeyFileTest, RefusesAReadableFile) {
  std::string path = dir_ + "/wg.key";
  ASSERT_TRUE(load_or_create_private_key(path));
  chmod(path.c_str(), 0644);
  auto r = load_or_create_private_key(path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EPERM);
  EXPECT_NE(r.error().context().find("chmod 600"), std::string::npos);
}

TEST_F(KeyFileTest, RejectsGarbageWithoutEchoingIt) {
  std::string path = dir_ + "/wg.key";
  {
    std::ofstream out(path);
    out << "not-a-key-but-maybe-a-secret\n";
  }
  chmod(path.c_str(), 0600);
  auto r = load_or_create_private_key(path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message().find("maybe-a-secret"), std::string::npos);
  EXPECT_NE(r.error().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace portcullis
