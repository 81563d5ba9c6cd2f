// RocksDB-only behaviour, beyond the shared contract: everything survives a reopen; the cluster marker and
// directory checks refuse foreign state without changing it; a directory in use is refused (in this process
// and from another one); acknowledged writes survive SIGKILL of the writing process and no batch is torn;
// every Write is fsynced before it returns; RocksDB codes map to Status codes keeping RocksDB's names.
#include "storage/rocks_state_store.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "storage/memory_state_store.h"
#include "storage/rocks_status.h"
#include "tests/storage/test_util.h"

extern char** environ;

// ---- fsync accounting. These definitions interpose on libc's for the whole test binary (librocksdb's calls
// included), so a test can see that each Write reached fdatasync before returning. Not under TSan, which
// intercepts these itself.
#if !defined(__SANITIZE_THREAD__)
#define SHOAL_COUNT_SYNCS 1
namespace {
std::atomic<int64_t> g_num_syncs{0};
template <typename Fn>
Fn RealFunction(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}
}  // namespace

extern "C" int fdatasync(int fd) {
  static auto real = RealFunction<int (*)(int)>("fdatasync");
  g_num_syncs.fetch_add(1);
  return real(fd);
}

extern "C" int fsync(int fd) {
  static auto real = RealFunction<int (*)(int)>("fsync");
  g_num_syncs.fetch_add(1);
  return real(fd);
}
#endif

namespace shoal {
namespace {

using testing_util::DumpAll;
using testing_util::Rows;
using testing_util::TempDir;

constexpr char kClusterA[] = "cluster-aaaaaaaaaaaa";
constexpr char kClusterB[] = "cluster-bbbbbbbbbbbb";

std::unique_ptr<StateStore> MustOpen(const std::string& dir, const std::string& cluster,
                                     const RocksOptions& options = {}) {
  auto store = OpenRocksStateStore(dir, cluster, options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

// ---- Crash-test batches: batch i puts one key into three tables (one value large enough to span pages of
// the log) and records i in meta, so a torn batch would show as a key present in some tables only.

std::string CrashKey(int i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "batch-%06d", i);
  return buf;
}

WriteBatch CrashBatch(int i) {
  WriteBatch b;
  b.Put(Table::kJobs, CrashKey(i), "job " + std::to_string(i));
  b.Put(Table::kPlacements, CrashKey(i), std::string(3000, static_cast<char>('a' + i % 26)));
  b.Put(Table::kEvents, CrashKey(i), "event " + std::to_string(i));
  b.Put(Table::kMeta, "last_batch", std::to_string(i));
  return b;
}

// ---- Child processes. A test that needs a second process forks and re-executes this binary with
// SHOAL_STORAGE_TEST_CHILD set; the hook below runs the child's part before main() and exits. Re-executing
// (rather than running on in the fork) gives the child a clean RocksDB, not a copy of the parent's threads.
constexpr char kChildModeEnv[] = "SHOAL_STORAGE_TEST_CHILD";      // "hold" or "write"
constexpr char kChildDirEnv[] = "SHOAL_STORAGE_TEST_DIR";
constexpr char kChildBatchesEnv[] = "SHOAL_STORAGE_TEST_BATCHES";  // "write": how many, then SIGKILL itself

bool WriteByte(int fd, char c) {
  for (;;) {
    ssize_t n = ::write(fd, &c, 1);
    if (n == 1) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

int RunChild(std::string_view mode) {
  const char* dir = std::getenv(kChildDirEnv);
  if (dir == nullptr) return 10;
  auto store = OpenRocksStateStore(dir, kClusterA);
  if (!store.ok()) {
    std::fprintf(stderr, "child: %s\n", store.status().ToString().c_str());
    return 11;
  }
  if (mode == "hold") {
    if (!WriteByte(STDOUT_FILENO, 'R')) return 12;
    for (;;) ::pause();  // until the parent kills us
  }
  if (mode == "write") {
    const char* n_env = std::getenv(kChildBatchesEnv);
    const long n = n_env != nullptr ? std::atol(n_env) : -1;  // -1: until killed
    for (int i = 0; n < 0 || i < n; ++i) {
      Status s = (*store)->Write(CrashBatch(i));
      if (!s.ok()) {
        std::fprintf(stderr, "child: %s\n", s.ToString().c_str());
        return 13;
      }
      if (!WriteByte(STDOUT_FILENO, 'A')) return 14;  // the acknowledgement a client would have seen
    }
    ::kill(::getpid(), SIGKILL);  // right after the last acknowledgement: no destructor, no Close
  }
  return 15;
}

[[maybe_unused]] const bool kChildHookRan = [] {
  const char* mode = std::getenv(kChildModeEnv);
  if (mode != nullptr) ::_exit(RunChild(mode));
  return false;
}();

// A child process running RunChild; killed and reaped on destruction, so a failing test leaves no orphan.
class ChildProcess {
 public:
  explicit ChildProcess(const std::map<std::string, std::string>& env) {
    // Everything is prepared before fork(): between fork and exec the child makes only async-signal-safe calls.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (std::string& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    char self[PATH_MAX] = {};
    ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    EXPECT_GT(len, 0) << "readlink /proc/self/exe";
    char* argv[] = {self, nullptr};
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);

    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(fds[1], STDOUT_FILENO);  // the copy loses O_CLOEXEC; the originals close at exec
      ::execve(self, argv, envp.data());
      ::_exit(127);
    }
    EXPECT_GT(pid_, 0) << "fork failed";
    ::close(fds[1]);
    read_fd_ = fds[0];
  }
  ~ChildProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (read_fd_ >= 0) ::close(read_fd_);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The next byte the child wrote to its stdout; nullopt once it has exited and everything was read.
  std::optional<char> Read() {
    char c;
    for (;;) {
      ssize_t n = ::read(read_fd_, &c, 1);
      if (n == 1) return c;
      if (n < 0 && errno == EINTR) continue;
      return std::nullopt;
    }
  }
  void Kill() { ::kill(pid_, SIGKILL); }
  // The raw wait status.
  int Wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int read_fd_ = -1;
};

std::string DescribeWait(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

// ---- Raw RocksDB, to build databases shoal did not write.

void RawCreate(const std::string& dir, const std::map<std::string, Rows>& column_families) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {{rocksdb::kDefaultColumnFamilyName, {}}};
  for (const auto& [name, rows] : column_families) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, dir, descriptors, &handles, &db).ok());
  size_t idx = 1;
  for (const auto& [name, rows] : column_families) {
    for (const auto& [k, v] : rows) ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[idx], k, v).ok());
    ++idx;
  }
  for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  ASSERT_TRUE(db->Close().ok());
  delete db;
}

std::vector<std::string> RawColumnFamilies(const std::string& dir) {
  std::vector<std::string> names;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
  std::sort(names.begin(), names.end());
  return names;
}

// ---- Tests.

// A history touching every table and op kind, with enough bytes to flush memtables to SST files.
std::vector<WriteBatch> SomeHistory() {
  std::vector<WriteBatch> history;
  for (int i = 0; i < 60; ++i) {
    WriteBatch b;
    for (Table t : kAllTables) {
      b.Put(t, "k/" + std::to_string(i), std::string(2000 + i, static_cast<char>(i)));
    }
    b.Put(Table::kCursors, std::string("\0bin\xff", 5) + std::to_string(i), "");
    if (i % 7 == 3) b.Delete(Table::kJobs, "k/" + std::to_string(i - 1));
    history.push_back(std::move(b));
  }
  WriteBatch prefixes;
  prefixes.DeletePrefix(Table::kWorkers, "k/1");  // k/1, k/10..k/19
  prefixes.DeletePrefix(Table::kEvents, "");      // the whole table
  prefixes.Put(Table::kEvents, "after-clear", "e");
  history.push_back(std::move(prefixes));
  return history;
}

TEST(RocksStateStoreTest, ReopenPersistsEverything) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  RocksOptions small;
  small.memtable_bytes = 64 << 10;  // force flushes, so the reopen reads SST files as well as the log
  MemoryStateStore model(kClusterA);
  {
    auto store = MustOpen(dir, kClusterA, small);
    ASSERT_NE(store, nullptr);
    for (const WriteBatch& b : SomeHistory()) {
      ASSERT_TRUE(store->Write(b).ok());
      ASSERT_TRUE(model.Write(b).ok());
    }
    EXPECT_EQ(DumpAll(*store), DumpAll(model));
  }
  bool has_sst = false;
  for (const auto& e : std::filesystem::directory_iterator(dir)) has_sst |= e.path().extension() == ".sst";
  EXPECT_TRUE(has_sst) << "the history was meant to flush at least one memtable";

  auto reopened = MustOpen(dir, kClusterA);
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->cluster_id(), kClusterA);
  auto dump = DumpAll(*reopened);
  EXPECT_EQ(dump, DumpAll(model));
  EXPECT_EQ(dump[Table::kEvents], (Rows{{"after-clear", "e"}}));
  EXPECT_EQ(dump[Table::kJobs].size(), 60u - 9u);
}

TEST(RocksStateStoreTest, AnotherClustersDirectoryIsRefusedAndLeftUnchanged) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  std::map<Table, Rows> before;
  {
    auto store = MustOpen(dir, kClusterA);
    ASSERT_NE(store, nullptr);
    WriteBatch b;
    b.Put(Table::kJobs, "job-1", "spec");
    ASSERT_TRUE(store->Write(b).ok());
    before = DumpAll(*store);
  }
  auto refused = OpenRocksStateStore(dir, kClusterB);
  ASSERT_FALSE(refused.ok());
  const Status& s = refused.status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find(dir), std::string::npos) << s;
  EXPECT_NE(s.message().find(std::string("belongs to cluster '") + kClusterA + "'"), std::string::npos) << s;
  EXPECT_NE(s.message().find(std::string("'") + kClusterB + "'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("its own new state directory"), std::string::npos) << s;

  auto again = MustOpen(dir, kClusterA);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(DumpAll(*again), before);
}

TEST(RocksStateStoreTest, MismatchIsRefusedBeforeAnyTableIsCreated) {
  // A database from a version with fewer tables: the check must come before the missing ones are created.
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  RawCreate(dir, {{"meta", {{std::string(kClusterIdKey), kClusterB}}}});
  auto refused = OpenRocksStateStore(dir, kClusterA);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_EQ(RawColumnFamilies(dir), (std::vector<std::string>{"default", "meta"}));

  auto adopted = MustOpen(dir, kClusterB);  // its own cluster gets the missing tables
  ASSERT_NE(adopted, nullptr);
  adopted.reset();
  EXPECT_EQ(RawColumnFamilies(dir).size(), kAllTables.size() + 1);
}

TEST(RocksStateStoreTest, DatabaseWithDataButNoMarkerIsRefused) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  RawCreate(dir, {{"jobs", {{"job-1", "someone else's"}}}});
  auto refused = OpenRocksStateStore(dir, kClusterA);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("no cluster marker"), std::string::npos) << refused.status();
  EXPECT_EQ(RawColumnFamilies(dir), (std::vector<std::string>{"default", "jobs"}));
}

TEST(RocksStateStoreTest, EmptyDatabaseIsAdoptedAndUnknownTablesAreKept) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  RawCreate(dir, {{"future_table", {{"f", "from a newer shoal"}}}});
  {
    auto store = MustOpen(dir, kClusterA);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(*store->Get(Table::kMeta, kClusterIdKey), kClusterA);
  }
  EXPECT_NE(MustOpen(dir, kClusterA), nullptr);
  EXPECT_FALSE(OpenRocksStateStore(dir, kClusterB).ok());  // the marker was recorded durably
  auto names = RawColumnFamilies(dir);
  EXPECT_NE(std::find(names.begin(), names.end(), "future_table"), names.end());
}

TEST(RocksStateStoreTest, NonEmptyDirectoryThatIsNotAStateDirectoryIsRefused) {
  TempDir tmp;
  std::ofstream(tmp.Sub("notes.txt")) << "my notes";
  auto refused = OpenRocksStateStore(tmp.path(), kClusterA);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("'notes.txt'"), std::string::npos) << refused.status();
  EXPECT_FALSE(std::filesystem::exists(tmp.Sub("CURRENT")));
  EXPECT_FALSE(std::filesystem::exists(tmp.Sub("LOCK")));

  std::ofstream(tmp.Sub("a-file")) << "x";
  auto not_dir = OpenRocksStateStore(tmp.Sub("a-file"), kClusterA);
  EXPECT_EQ(not_dir.status().code(), StatusCode::kFailedPrecondition) << not_dir.status();
}

TEST(RocksStateStoreTest, MissingDirectoriesAreCreatedUnlessToldNot) {
  TempDir tmp;
  EXPECT_NE(MustOpen(tmp.Sub("a/b/state"), kClusterA), nullptr);
  RocksOptions no_create;
  no_create.create_if_missing = false;
  auto missing = OpenRocksStateStore(tmp.Sub("absent"), kClusterA, no_create);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status();
  EXPECT_FALSE(std::filesystem::exists(tmp.Sub("absent")));
  EXPECT_NE(MustOpen(tmp.Sub("a/b/state"), kClusterA, no_create), nullptr);  // existing is fine
}

TEST(RocksStateStoreTest, EmptyClusterIdOrPathIsInvalid) {
  TempDir tmp;
  EXPECT_EQ(OpenRocksStateStore(tmp.Sub("s"), "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenRocksStateStore("", kClusterA).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(tmp.Sub("s")));
}

TEST(RocksStateStoreTest, DirectoryOpenTwiceInThisProcessIsUnavailable) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  auto first = MustOpen(dir, kClusterA);
  ASSERT_NE(first, nullptr);
  auto second = OpenRocksStateStore(dir, kClusterA);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status();
  EXPECT_NE(second.status().message().find("state directory " + dir + " is already open in this process"),
            std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find("rocksdb IOError"), std::string::npos) << second.status();

  WriteBatch b;  // the first is unaffected
  b.Put(Table::kJobs, "j", "v");
  EXPECT_TRUE(first->Write(b).ok());
  first.reset();
  EXPECT_NE(MustOpen(dir, kClusterA), nullptr);
}

TEST(RocksStateStoreTest, SecondProcessIsRefusedWhileTheFirstHoldsTheDirectory) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  ChildProcess holder({{kChildModeEnv, "hold"}, {kChildDirEnv, dir}});
  ASSERT_EQ(holder.Read(), 'R') << "the child could not open " << dir;

  auto refused = OpenRocksStateStore(dir, kClusterA);
  ASSERT_FALSE(refused.ok());
  const Status& s = refused.status();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("state directory " + dir + " is already in use by another process"),
            std::string::npos)
      << s;
  EXPECT_NE(s.message().find("rocksdb IOError"), std::string::npos) << s;

  holder.Kill();
  int status = holder.Wait();
  EXPECT_TRUE(WIFSIGNALED(status)) << DescribeWait(status);
  // A holder that died leaves no stale lock behind.
  auto after = MustOpen(dir, kClusterA);
  ASSERT_NE(after, nullptr);
}

// Checks what a crash left: every acknowledged batch whole, and any unacknowledged one whole or absent.
void ExpectBatchesWhole(const StateStore& store, int num_acknowledged) {
  auto jobs = store.Scan(Table::kJobs, "batch-");
  auto placements = store.Scan(Table::kPlacements, "batch-");
  auto events = store.Scan(Table::kEvents, "batch-");
  ASSERT_TRUE(jobs.ok() && placements.ok() && events.ok());
  const size_t n = jobs->size();
  EXPECT_GE(n, static_cast<size_t>(num_acknowledged)) << "an acknowledged batch was lost";
  ASSERT_EQ(placements->size(), n) << "a batch was torn";
  ASSERT_EQ(events->size(), n) << "a batch was torn";
  for (size_t i = 0; i < n; ++i) {
    const int idx = static_cast<int>(i);
    const WriteBatch expected = CrashBatch(idx);
    ASSERT_EQ((*jobs)[i], (std::pair<std::string, std::string>{CrashKey(idx), expected.ops()[0].value}));
    ASSERT_EQ((*placements)[i], (std::pair<std::string, std::string>{CrashKey(idx), expected.ops()[1].value}));
    ASSERT_EQ((*events)[i], (std::pair<std::string, std::string>{CrashKey(idx), expected.ops()[2].value}));
  }
  auto last = store.Get(Table::kMeta, "last_batch");
  ASSERT_TRUE(last.ok());
  if (n > 0) {
    EXPECT_EQ(*last, std::to_string(n - 1));
  }
}

TEST(RocksStateStoreTest, AcknowledgedBatchesSurviveSigkillRightAfterWriteReturns) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  constexpr int kBatches = 25;
  ChildProcess writer(
      {{kChildModeEnv, "write"}, {kChildDirEnv, dir}, {kChildBatchesEnv, std::to_string(kBatches)}});
  int acks = 0;
  while (auto c = writer.Read()) {
    ASSERT_EQ(*c, 'A');
    ++acks;
  }
  int status = writer.Wait();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << DescribeWait(status);
  ASSERT_EQ(acks, kBatches);

  auto store = MustOpen(dir, kClusterA);
  ASSERT_NE(store, nullptr);
  ExpectBatchesWhole(*store, acks);
  EXPECT_EQ(store->Scan(Table::kJobs)->size(), static_cast<size_t>(kBatches));
}

TEST(RocksStateStoreTest, SigkillAtAnyMomentLosesNoAcknowledgedBatchAndTearsNone) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  ChildProcess writer({{kChildModeEnv, "write"}, {kChildDirEnv, dir}});
  int acks = 0;
  while (acks < 60) {
    auto c = writer.Read();
    ASSERT_TRUE(c.has_value()) << "the writer died early: " << DescribeWait(writer.Wait());
    ++acks;
  }
  writer.Kill();  // mid-stream: it is usually inside a Write now
  while (writer.Read().has_value()) ++acks;  // acknowledgements sent before it died count too
  int status = writer.Wait();
  ASSERT_TRUE(WIFSIGNALED(status)) << DescribeWait(status);

  auto store = MustOpen(dir, kClusterA);
  ASSERT_NE(store, nullptr);
  ExpectBatchesWhole(*store, acks);
}

#ifdef SHOAL_COUNT_SYNCS
TEST(RocksStateStoreTest, EveryWriteIsFsyncedBeforeItReturns) {
  TempDir tmp;
  auto store = MustOpen(tmp.Sub("state"), kClusterA);
  ASSERT_NE(store, nullptr);
  constexpr int kWrites = 10;
  for (int i = 0; i < kWrites; ++i) {
    const int64_t before = g_num_syncs.load();
    WriteBatch b;
    b.Put(Table::kEvents, "e" + std::to_string(i), "x");
    ASSERT_TRUE(store->Write(b).ok());
    EXPECT_GE(g_num_syncs.load() - before, 1) << "write " << i << " returned without an fsync";
  }
  const int64_t before_reads = g_num_syncs.load();
  ASSERT_TRUE(store->Scan(Table::kEvents).ok());
  EXPECT_EQ(g_num_syncs.load(), before_reads) << "reads should not sync (is the counter counting?)";
}
#endif

TEST(RocksStateStoreTest, CorruptDatabaseIsDataLoss) {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  EXPECT_NE(MustOpen(dir, kClusterA), nullptr);
  std::ofstream(dir + "/CURRENT", std::ios::trunc) << "garbage without a newline";
  auto opened = OpenRocksStateStore(dir, kClusterA);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kDataLoss) << opened.status();
  EXPECT_NE(opened.status().message().find("rocksdb Corruption"), std::string::npos) << opened.status();
  EXPECT_NE(opened.status().message().find(dir), std::string::npos) << opened.status();
}

TEST(RocksStatusTest, CodesMapAndKeepRocksDbsName) {
  using R = rocksdb::Status;
  EXPECT_TRUE(FromRocksStatus(R::OK(), "x").ok());
  struct Case {
    R in;
    StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {R::Corruption("block checksum mismatch"), StatusCode::kDataLoss,
       "read jobs: rocksdb Corruption: block checksum mismatch"},
      {R::NotFound("x"), StatusCode::kNotFound, "read jobs: rocksdb NotFound: x"},
      {R::IOError("write failed"), StatusCode::kInternal, "read jobs: rocksdb IOError: write failed"},
      {R::NoSpace("append", "disk full"), StatusCode::kResourceExhausted,
       "read jobs: rocksdb IOError(NoSpace): append: disk full"},
      {R::IOError("While lock file: /s/LOCK", "Resource temporarily unavailable"), StatusCode::kUnavailable,
       "read jobs: rocksdb IOError: While lock file: /s/LOCK: Resource temporarily unavailable"},
      {R::Busy("memtable"), StatusCode::kUnavailable, "read jobs: rocksdb Busy: memtable"},
      {R::TryAgain("later"), StatusCode::kUnavailable, "read jobs: rocksdb TryAgain: later"},
      {R::TimedOut("slow"), StatusCode::kDeadlineExceeded, "read jobs: rocksdb TimedOut: slow"},
      {R::NotSupported("mmap"), StatusCode::kUnimplemented, "read jobs: rocksdb NotSupported: mmap"},
      {R::InvalidArgument("bad"), StatusCode::kInvalidArgument, "read jobs: rocksdb InvalidArgument: bad"},
  };
  for (const Case& c : cases) {
    Status s = FromRocksStatus(c.in, "read jobs");
    EXPECT_EQ(s.code(), c.code) << c.in.ToString();
    EXPECT_EQ(s.message(), c.message) << c.in.ToString();
  }
}

}  // namespace
}  // namespace shoal
