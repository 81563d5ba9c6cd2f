// CHECK(cond) << "context": aborts the process on our own bugs (never for bad input; that is a Status).
#pragma once

#include <sstream>

#include "common/status.h"

namespace shoal::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets `CHECK(x) << ...` be an expression of type void in both branches of the ternary.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace shoal::internal

#define CHECK(cond)                  \
  (cond) ? (void)0                   \
         : ::shoal::internal::Voidify() & \
               ::shoal::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define CHECK_OK(expr)                                                                      \
  do {                                                                                      \
    const ::shoal::Status shoal_check_status_ = ::shoal::internal::AsStatus(expr);        \
    CHECK(shoal_check_status_.ok()) << shoal_check_status_.ToString();                     \
  } while (0)

#define CHECK_EQ(a, b) CHECK((a) == (b))
#define CHECK_NE(a, b) CHECK((a) != (b))
#define CHECK_LT(a, b) CHECK((a) < (b))
#define CHECK_LE(a, b) CHECK((a) <= (b))
#define CHECK_GT(a, b) CHECK((a) > (b))
#define CHECK_GE(a, b) CHECK((a) >= (b))
