// The pure parts of worker/comm (tag layout, groups, chunking, address text) and the Communicator's argument
// checks, in one process.
#include <gtest/gtest.h>

#include <set>

#include "worker/comm/communicator.h"
#include "worker/comm/group.h"
#include "worker/comm/tag.h"
#include "worker/comm/ucx_util.h"

namespace shoal::comm {
namespace {

using namespace std::chrono_literals;

TEST(TagTest, FieldsRoundTripAndDistinctFieldsGiveDistinctTags) {
  uint64_t t = EncodeTag(P2pTag{5, 17, 123456, 3});
  EXPECT_EQ(TagEpoch(t), 5u);
  EXPECT_EQ(TagSrc(t), 17);
  EXPECT_EQ(TagKindOf(t), TagKind::kP2p);
  EXPECT_EQ(DescribeTag(t), "epoch 5, rank 17 -> p2p tag 123456 #3");
  std::set<uint64_t> tags = {
      EncodeTag(P2pTag{5, 17, 123456, 3}), EncodeTag(P2pTag{6, 17, 123456, 3}), EncodeTag(P2pTag{5, 18, 123456, 3}),
      EncodeTag(P2pTag{5, 17, 123457, 3}), EncodeTag(P2pTag{5, 17, 123456, 4}),
      EncodeTag(CollectiveTag{5, 17, 123456 & kMaxGroupId, 3, 0}),
  };
  EXPECT_EQ(tags.size(), 6u);
  uint64_t c = EncodeTag(CollectiveTag{9, 4095, 4095, 16383, 255});
  EXPECT_EQ(TagEpoch(c), 9u);
  EXPECT_EQ(TagSrc(c), 4095);
  EXPECT_EQ(TagKindOf(c), TagKind::kCollective);
  EXPECT_EQ(DescribeTag(c), "epoch 9, rank 4095 -> group 4095 call #16383 step 255");
}

TEST(TagTest, TheEpochFieldSeparatesEpochsThatShareTheirOtherFields) {
  uint64_t old_epoch = EncodeTag(P2pTag{41, 1, 5, 0});
  uint64_t new_epoch = EncodeTag(P2pTag{42, 1, 5, 0});
  EXPECT_NE(old_epoch & kFullMask, new_epoch & kFullMask);
  EXPECT_EQ(old_epoch & EpochMask(), EpochBits(41));
  EXPECT_NE(new_epoch & EpochMask(), EpochBits(41));
  // Only the low 16 bits travel: epoch 65536 + 41 aliases 41 (documented wrap).
  EXPECT_EQ(EncodeTag(P2pTag{65536 + 41, 1, 5, 0}), old_epoch);
}

TEST(TagTest, TheCallMaskMatchesEverySenderAndStepOfOneCallOnly) {
  uint64_t probe = EncodeTag(CollectiveTag{3, 0, 77, 12, 0});
  uint64_t mask = CollectiveCallMask();
  EXPECT_EQ(EncodeTag(CollectiveTag{3, 9, 77, 12, 1}) & mask, probe & mask);
  EXPECT_NE(EncodeTag(CollectiveTag{3, 9, 77, 13, 0}) & mask, probe & mask);  // next call
  EXPECT_NE(EncodeTag(CollectiveTag{3, 9, 78, 12, 0}) & mask, probe & mask);  // other group
  EXPECT_NE(EncodeTag(CollectiveTag{4, 9, 77, 12, 0}) & mask, probe & mask);  // other epoch
  EXPECT_NE(EncodeTag(P2pTag{3, 9, 77, 12}) & mask, probe & mask);            // p2p
}

TEST(GroupTest, RejectsEmptyDuplicateAndOutOfRangeRanks) {
  EXPECT_EQ(Group::Create({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Group::Create({1, 2, 1}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Group::Create({-1}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Group::Create({kMaxRanks}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Group::Create({0, 1}, kMaxGroupId + 1).status().code(), StatusCode::kInvalidArgument);
}

TEST(GroupTest, IdsAreDeterministicOrderSensitiveAndOverridable) {
  Group a = *Group::Create({0, 2, 4});
  EXPECT_EQ(a.id(), Group::Create({0, 2, 4})->id());
  EXPECT_NE(a.id(), Group::Create({4, 2, 0})->id());
  EXPECT_EQ(Group::Create({0, 2, 4}, 17)->id(), 17u);
  EXPECT_EQ(a.IndexOf(4), 2);
  EXPECT_EQ(a.IndexOf(1), -1);
  EXPECT_EQ(Group::Create({3, 1}, 5)->DebugString(), "group 5 [3,1]");
}

TEST(GroupTest, BalancedCountsAndOffsets) {
  EXPECT_EQ(BalancedCounts(10, 3), (std::vector<size_t>{4, 3, 3}));
  EXPECT_EQ(BalancedCounts(2, 4), (std::vector<size_t>{1, 1, 0, 0}));
  EXPECT_EQ(BalancedCounts(0, 2), (std::vector<size_t>{0, 0}));
  std::vector<size_t> counts = {4, 0, 3};
  EXPECT_EQ(ExclusiveOffsets(counts), (std::vector<size_t>{0, 4, 4}));
  EXPECT_EQ(Sum(counts), 7u);
}

TEST(AddressTest, HexRoundTripsAndRejectsBadText) {
  std::string raw("\x00\x01\xfe\xff zz", 7);
  EXPECT_EQ(HexEncode(raw), "0001feff207a7a");
  EXPECT_EQ(*HexDecode("0001FEFF207a7a"), raw);
  EXPECT_EQ(HexDecode("abc").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HexDecode("zz").status().code(), StatusCode::kInvalidArgument);
}

TEST(TransportTest, ParsesModesAndTheEnvironment) {
  EXPECT_EQ(*ParseTransport("shm"), Transport::kShm);
  EXPECT_EQ(*ParseTransport("tcp"), Transport::kTcp);
  EXPECT_EQ(ParseTransport("rdma").status().code(), StatusCode::kInvalidArgument);
  ::setenv("SHOAL_UCX_MODE", "shm", 1);
  EXPECT_EQ(CommunicatorOptions::FromEnvironment()->transport, Transport::kShm);
  ::setenv("SHOAL_UCX_MODE", "bogus", 1);
  EXPECT_EQ(CommunicatorOptions::FromEnvironment().status().code(), StatusCode::kInvalidArgument);
  ::unsetenv("SHOAL_UCX_MODE");
  EXPECT_EQ(CommunicatorOptions::FromEnvironment()->transport, Transport::kTcp);  // the safe default
}

TEST(CommunicatorTest, PublishesAnAddressAndRefusesOperationsBeforeConnect) {
  auto comm = Communicator::Create({});
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_FALSE((*comm)->address().empty());
  EXPECT_TRUE(HexDecode((*comm)->address()).ok());
  std::vector<std::byte> buf(4);
  CommHandle h = (*comm)->Send(1, 0, buf);
  EXPECT_TRUE(h.Done());
  EXPECT_EQ(h.Wait(1s).code(), StatusCode::kFailedPrecondition);
}

TEST(CommunicatorTest, ChecksArgumentsBeforeAnythingMoves) {
  auto created = Communicator::Create({});
  ASSERT_TRUE(created.ok()) << created.status();
  Communicator& comm = **created;
  ASSERT_TRUE(comm.Connect(1, 0, {{0, comm.address()}}).ok());
  std::vector<std::byte> b(8);
  std::vector<float> f(8);
  EXPECT_EQ(comm.Send(0, 1, b).Wait(1s).code(), StatusCode::kInvalidArgument);            // to itself
  EXPECT_EQ(comm.Send(1, kMaxUserTag + 1, b).Wait(1s).code(), StatusCode::kInvalidArgument);
  Group others = *Group::Create({1, 2});
  EXPECT_EQ(comm.AllReduce(others, f).Wait(1s).code(), StatusCode::kInvalidArgument);   // not a member
  Group pair = *Group::Create({0, 1});
  std::vector<float> out(3);
  EXPECT_EQ(comm.ReduceScatter(pair, std::vector<float>(7), out).Wait(1s).code(), StatusCode::kInvalidArgument);
  std::vector<size_t> counts = {4, 4}, offsets = {0, 6};
  EXPECT_EQ(comm.AllToAllV(pair, b, counts, offsets, b, counts, std::vector<size_t>{0, 4}).Wait(1s).code(),
            StatusCode::kInvalidArgument);  // send segment 1 runs past the buffer
  // A peer that was never connected fails the operation instead of hanging.
  EXPECT_EQ(comm.Send(5, 1, b).Wait(10s).code(), StatusCode::kFailedPrecondition);
}

TEST(CommunicatorTest, SingleMemberCollectivesAreLocalCopies) {
  auto created = Communicator::Create({});
  ASSERT_TRUE(created.ok()) << created.status();
  Communicator& comm = **created;
  ASSERT_TRUE(comm.Connect(3, 0, {}).ok());
  Group solo = *Group::Create({0});
  std::vector<float> data = {1.5f, -2.0f, 3.25f};
  ASSERT_TRUE(comm.AllReduce(solo, data).Wait(10s).ok());
  EXPECT_EQ(data, (std::vector<float>{1.5f, -2.0f, 3.25f}));
  std::vector<float> out(3);
  ASSERT_TRUE(comm.ReduceScatter(solo, data, out).Wait(10s).ok());
  EXPECT_EQ(out, data);
  std::vector<std::byte> in = {std::byte{1}, std::byte{2}}, all(2);
  ASSERT_TRUE(comm.AllGather(solo, in, all).Wait(10s).ok());
  EXPECT_EQ(all, in);
}

TEST(CommunicatorTest, TwoCommunicatorsInOneProcessExchangeAndAnEpochChangeAbortsPendingWork) {
  for (Transport t : {Transport::kShm, Transport::kTcp}) {
    CommunicatorOptions options;
    options.transport = t;
    auto a = Communicator::Create(options);
    auto b = Communicator::Create(options);
    ASSERT_TRUE(a.ok() && b.ok());
    std::map<int, std::string> peers = {{0, (*a)->address()}, {1, (*b)->address()}};
    ASSERT_TRUE((*a)->Connect(1, 0, peers).ok());
    ASSERT_TRUE((*b)->Connect(1, 1, peers).ok());
    std::vector<std::byte> msg(100000, std::byte{42}), got(100000);
    CommHandle r = (*b)->Recv(0, 3, got);
    CommHandle s = (*a)->Send(1, 3, msg);
    ASSERT_TRUE(s.Wait(20s).ok()) << TransportName(t);
    ASSERT_TRUE(r.Wait(20s).ok()) << TransportName(t);
    EXPECT_EQ(got, msg);
    // A receive pending when the epoch changes ends with Aborted.
    CommHandle pending = (*b)->Recv(0, 4, got);
    ASSERT_TRUE((*b)->Connect(2, 1, peers).ok());
    EXPECT_EQ(pending.Wait(20s).code(), StatusCode::kAborted) << TransportName(t);
  }
}

}  // namespace
}  // namespace shoal::comm
