#include "common/ids.h"

#include <gtest/gtest.h>

#include <set>

namespace shoal {
namespace {

TEST(IdsTest, NewIdIsPrefixedHexAndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = NewId("job");
    ASSERT_EQ(id.size(), 4u + 12u);
    ASSERT_EQ(id.substr(0, 4), "job-");
    for (char c : id.substr(4)) ASSERT_TRUE(isxdigit(c) && !isupper(c)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(IdsTest, HexRoundTripAndRejectsGarbage) {
  std::vector<uint8_t> bytes = {0x00, 0x7f, 0xff, 0x10};
  std::string hex = HexEncode(bytes);
  EXPECT_EQ(hex, "007fff10");
  std::vector<uint8_t> back;
  ASSERT_TRUE(HexDecode(hex, &back));
  EXPECT_EQ(back, bytes);
  EXPECT_FALSE(HexDecode("abc", &back));
  EXPECT_FALSE(HexDecode("zz", &back));
}

}  // namespace
}  // namespace shoal
