#include "protocol/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "common/file_util.h"

namespace shoal::protocol {
namespace {

TEST(AuthTest, TokenFileIsCreatedOnceWithMode0600) {
  auto dir = std::filesystem::temp_directory_path() / ("shoal-auth-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "token").string();
  auto first = LoadOrCreateToken(path);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->bytes.size(), kTokenBytes);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  auto second = LoadOrCreateToken(path);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->bytes, first->bytes);
  EXPECT_EQ(ClusterIdFromToken(*first), ClusterIdFromToken(*second));
  ASSERT_TRUE(WriteFileAtomic(path, "not-hex\n", 0600).ok());
  auto bad = LoadToken(path);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

TEST(AuthTest, MacsDependOnTokenNoncesRoleAndName) {
  Token a{std::vector<uint8_t>(32, 1)}, b{std::vector<uint8_t>(32, 2)};
  std::vector<uint8_t> sn(32, 7), cn(32, 9);
  auto mac = ClientMac(a, sn, cn, 1, "w0");
  EXPECT_TRUE(MacEquals(mac.data(), mac.size(), ClientMac(a, sn, cn, 1, "w0")));
  EXPECT_FALSE(MacEquals(mac.data(), mac.size(), ClientMac(b, sn, cn, 1, "w0")));
  EXPECT_FALSE(MacEquals(mac.data(), mac.size(), ClientMac(a, cn, sn, 1, "w0")));
  EXPECT_FALSE(MacEquals(mac.data(), mac.size(), ClientMac(a, sn, cn, 0, "w0")));
  EXPECT_FALSE(MacEquals(mac.data(), mac.size(), ClientMac(a, sn, cn, 1, "w1")));
  EXPECT_FALSE(MacEquals(mac.data(), mac.size(), ServerMac(a, cn, sn)));
  EXPECT_NE(ClusterIdFromToken(a), ClusterIdFromToken(b));
}

}  // namespace
}  // namespace shoal::protocol
