#include "controlplane/admin/admin_socket.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace portcullis::admin {
namespace {

class AdminSocketTest : public ::testing::Test {
 protected:
  portcullis::testing::TempDir dir_{"pcl-admin"};
  std::string path_ = dir_.file("run/admin.sock");
};

Result<nlohmann::json> echo(const std::string& command, const nlohmann::json& args) {
  if (command == "fail") return fail_invalid("device 'x' is unknown");
  return nlohmann::json{{"command", command}, {"args", args}};
}

TEST_F(AdminSocketTest, RoundTripsRequestsAndErrors) {
  auto server = AdminServer::start(path_, echo);
  ASSERT_TRUE(server) << server.error().message();
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto r = admin_request(path_, "device.list", {{"all", true}});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["command"], "device.list");
  EXPECT_EQ((*r)["args"]["all"], true);

  auto e = admin_request(path_, "fail", nlohmann::json::object());
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("device 'x' is unknown"), std::string::npos);
}

TEST_F(AdminSocketTest, SecondServerOnALiveSocketIsRefused) {
  auto a = AdminServer::start(path_, echo);
  ASSERT_TRUE(a);
  auto b = AdminServer::start(path_, echo);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().errno_value(), EADDRINUSE);
}

TEST_F(AdminSocketTest, StaleSocketIsReplacedAndRemovedOnStop) {
  { ASSERT_TRUE(AdminServer::start(path_, echo)); }
  struct stat st;
  EXPECT_NE(stat(path_.c_str(), &st), 0);  // removed when the server stopped
  ASSERT_TRUE(AdminServer::start(path_, echo));
}

TEST_F(AdminSocketTest, NoDaemonGivesAClearError) {
  auto r = admin_request(path_, "device.list", nlohmann::json::object());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("portcullisd is not running"), std::string::npos);
}

}  // namespace
}  // namespace portcullis::admin
