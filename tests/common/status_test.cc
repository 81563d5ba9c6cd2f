#include "common/status.h"

#include <gtest/gtest.h>

#include "common/check.h"

namespace shoal {
namespace {

Result<int> ParsePositive(int v) {
  if (v <= 0) return InvalidArgumentError("expected a positive integer, got " + std::to_string(v));
  return v;
}

Result<int> Doubled(int v) {
  ASSIGN_OR_RETURN(int x, ParsePositive(v));
  return 2 * x;
}

Status Chain(int v) {
  RETURN_IF_ERROR(ParsePositive(v));
  RETURN_IF_ERROR(Status::OK());
  return Status::OK();
}

TEST(StatusTest, OkAndErrorCarryCodeAndMessage) {
  EXPECT_TRUE(Status::OK().ok());
  EXPECT_EQ(Status::OK().ToString(), "OK");
  Status s = NotFoundError("job 'x' does not exist");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NotFound: job 'x' does not exist");
  EXPECT_EQ(s.WithContext("status").ToString(), "NotFound: status: job 'x' does not exist");
  Status copy = s;
  EXPECT_EQ(copy, s);
}

TEST(StatusTest, ResultPropagatesThroughMacros) {
  auto good = Doubled(21);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  auto bad = Doubled(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Chain(-3).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Chain(3).ok());
}

TEST(StatusTest, ErrnoKeepsTheLibraryName) {
  Status s = ErrnoToStatus(ENOENT, "open /nope/token");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("ENOENT"), std::string::npos);
  EXPECT_NE(s.message().find("/nope/token"), std::string::npos);
}

TEST(CheckDeathTest, CheckAbortsWithContext) {
  EXPECT_DEATH({ CHECK(1 + 1 == 3) << "arithmetic is broken"; }, "arithmetic is broken");
  EXPECT_DEATH({ Result<int> r(Status::OK()); (void)r; }, "OK Status");
}

}  // namespace
}  // namespace shoal
