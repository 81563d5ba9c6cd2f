// Shutdown signals for daemons. A sigaction handler writes the signal number into a self-pipe; a thread of the
// daemon waits on the pipe. This works whichever thread the kernel picks to deliver the signal to (libraries
// such as OpenBLAS start threads before main runs, so blocking signals in main cannot cover every thread).
#pragma once

#include <initializer_list>

namespace shoal {

// Installs the handler for these signals (call once, early in main). SIGPIPE is ignored.
void InstallShutdownSignals(std::initializer_list<int> signals);
// Blocks until one of the installed signals arrives; returns its number.
int WaitForShutdownSignal();

}  // namespace shoal
