#include "common/actor.h"

#include <gtest/gtest.h>

#include <thread>

namespace shoal {
namespace {

class Counter : public Actor {
 public:
  using Actor::Actor;
  void Increment() {
    Post("Counter.Increment", [this] {
      EXPECT_TRUE(OnStrand());
      ++value_;  // unsynchronised on purpose: the strand serialises it
    });
  }
  int value_unsafe() const { return value_; }

 private:
  int value_ = 0;
};

TEST(ActorTest, HandlersAreSerialisedOnTheStrandAcrossThreads) {
  boost::asio::io_context io;
  auto registry = std::make_shared<HandlerRegistry>();
  Counter counter(io, "counter", registry);
  constexpr int kPerThread = 20000;
  std::thread a([&] { for (int i = 0; i < kPerThread; ++i) counter.Increment(); });
  std::thread b([&] { for (int i = 0; i < kPerThread; ++i) counter.Increment(); });
  a.join();
  b.join();
  std::thread r1([&] { io.run(); });
  std::thread r2([&] { io.run(); });
  r1.join();
  r2.join();
  EXPECT_EQ(counter.value_unsafe(), 2 * kPerThread);
  auto stats = registry->Snapshot();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].name, "Counter.Increment");
  EXPECT_EQ(stats[0].count, 2u * kPerThread);
}

TEST(ActorTest, HookSeesHandlerNamesBeforeTheyRun) {
  boost::asio::io_context io;
  auto registry = std::make_shared<HandlerRegistry>();
  std::vector<std::string> seen;
  registry->SetHook([&](std::string_view name) { seen.emplace_back(name); });
  Counter counter(io, "counter", registry);
  counter.Increment();
  counter.Post("Counter.Other", [] {});
  io.run();
  EXPECT_EQ(seen, (std::vector<std::string>{"Counter.Increment", "Counter.Other"}));
}

}  // namespace
}  // namespace shoal
