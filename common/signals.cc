#include "common/signals.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

namespace shoal {
namespace {

int g_pipe[2] = {-1, -1};

void Handler(int sig) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(sig);
  (void)!::write(g_pipe[1], &b, 1);
  errno = saved;
}

}  // namespace

void InstallShutdownSignals(std::initializer_list<int> signals) {
  if (g_pipe[0] < 0) {
    if (::pipe2(g_pipe, O_CLOEXEC) != 0) return;
  }
  struct sigaction sa {};
  sa.sa_handler = Handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int s : signals) ::sigaction(s, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

int WaitForShutdownSignal() {
  for (;;) {
    unsigned char b = 0;
    ssize_t n = ::read(g_pipe[0], &b, 1);
    if (n == 1) return b;
    if (n < 0 && errno == EINTR) continue;
    return 0;
  }
}

}  // namespace shoal
