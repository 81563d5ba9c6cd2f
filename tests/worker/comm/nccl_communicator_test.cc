// The NCCL twin on a real device: every test skips cleanly where no CUDA device is visible (CPU CI).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "worker/comm/nccl_communicator.h"

namespace shoal::comm {
namespace {

using namespace std::chrono_literals;

#define SKIP_WITHOUT_DEVICE(n)                                                                      \
  if (NcclCommunicator::DeviceCount() < (n)) {                                                      \
    GTEST_SKIP() << "needs " << (n) << " CUDA device(s); " << NcclCommunicator::DeviceCount() << " visible"; \
  }

template <typename T>
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : count(n) { EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr); }
  void Put(const std::vector<T>& v) { ASSERT_EQ(cudaMemcpy(ptr, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<T> Get() const {
    std::vector<T> v(count);
    EXPECT_EQ(cudaMemcpy(v.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  T* ptr = nullptr;
  size_t count;
};

TEST(NcclCommunicatorTest, UniqueIdsAreHexTextAndCreateRejectsBadIds) {
  auto id = NcclCommunicator::NewUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();  // works without a device too
  EXPECT_EQ(id->size(), 256u);
  EXPECT_EQ(NcclCommunicator::Create("abcd", 0, 1, 0, 5s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclCommunicator::Create(*id, 2, 2, 0, 5s).status().code(), StatusCode::kInvalidArgument);
}

TEST(NcclCommunicatorTest, WithoutADeviceCreateFailsCleanly) {
  if (NcclCommunicator::DeviceAvailable()) GTEST_SKIP() << "a device is visible";
  auto id = NcclCommunicator::NewUniqueId();
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(NcclCommunicator::Create(*id, 0, 1, 0, 5s).status().code(), StatusCode::kFailedPrecondition);
}

TEST(NcclCommunicatorTest, SingleRankCollectivesOnOneDevice) {
  SKIP_WITHOUT_DEVICE(1);
  auto id = NcclCommunicator::NewUniqueId();
  ASSERT_TRUE(id.ok());
  auto comm = NcclCommunicator::Create(*id, 0, 1, 0, 60s);
  ASSERT_TRUE(comm.ok()) << comm.status();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  std::vector<float> x = {1.5f, -2.0f, 3.25f, 4.0f};
  DeviceBuffer<float> in(4), out(4);
  in.Put(x);
  NcclHandle h = (*comm)->AllReduce(in.ptr, out.ptr, 4, stream);
  ASSERT_TRUE(h.Wait(60s).ok());
  EXPECT_EQ(out.Get(), x);
  NcclHandle rs = (*comm)->ReduceScatter(in.ptr, out.ptr, 4, stream);
  ASSERT_TRUE(rs.Wait(60s).ok());
  EXPECT_EQ(out.Get(), x);
  DeviceBuffer<float> gathered(4);
  NcclHandle ag = (*comm)->AllGather(in.ptr, gathered.ptr, 4 * sizeof(float), stream);
  ASSERT_TRUE(ag.Wait(60s).ok());
  EXPECT_EQ(gathered.Get(), x);
  std::vector<size_t> counts = {16}, offsets = {0};
  DeviceBuffer<float> a2a(4);
  NcclHandle h2 = (*comm)->AllToAllV(in.ptr, counts, offsets, a2a.ptr, counts, offsets, stream);
  ASSERT_TRUE(h2.Wait(60s).ok()) << h2.Wait(1s);
  EXPECT_EQ(a2a.Get(), x);
  cudaStreamDestroy(stream);
}

TEST(NcclCommunicatorTest, TwoRanksOnTwoDevicesSumAndExchange) {
  SKIP_WITHOUT_DEVICE(2);
  auto id = NcclCommunicator::NewUniqueId();
  ASSERT_TRUE(id.ok());
  std::vector<std::vector<float>> results(2);
  std::vector<Status> statuses(2);
  auto rank_main = [&](int rank) {
    auto comm = NcclCommunicator::Create(*id, rank, 2, rank, 60s);
    if (!comm.ok()) {
      statuses[rank] = comm.status();
      return;
    }
    cudaStream_t stream;
    cudaStreamCreate(&stream);
    std::vector<float> x(1024, static_cast<float>(rank + 1));
    DeviceBuffer<float> in(1024), out(1024);
    in.Put(x);
    NcclHandle h = (*comm)->AllReduce(in.ptr, out.ptr, 1024, stream);
    statuses[rank] = h.Wait(60s);
    results[rank] = out.Get();
    cudaStreamDestroy(stream);
  };
  std::thread t0(rank_main, 0), t1(rank_main, 1);
  t0.join();
  t1.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(statuses[r].ok()) << statuses[r];
    EXPECT_EQ(results[r], std::vector<float>(1024, 3.0f));
  }
}

TEST(NcclCommunicatorTest, AMissingRankEndsCreateWithADeadlineInsteadOfAHang) {
  SKIP_WITHOUT_DEVICE(1);
  auto id = NcclCommunicator::NewUniqueId();
  ASSERT_TRUE(id.ok());
  auto comm = NcclCommunicator::Create(*id, 0, 2, 0, 3s);  // rank 1 never comes
  EXPECT_EQ(comm.status().code(), StatusCode::kDeadlineExceeded) << comm.status();
}

}  // namespace
}  // namespace shoal::comm
