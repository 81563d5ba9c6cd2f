// Device discovery for the kernels: how many CUDA devices this process can use. Always safe to call: on a
// build without CUDA, or a machine without a driver, it reports 0 (never crashes, never links -lcuda).
#pragma once

#include <string>

namespace shoal::kernels {

// Number of usable CUDA devices (0 without CUDA, driver or device).
int CudaDeviceCount();
// "NVIDIA H200 (sm_90, 139 GiB)" or "none: <reason>".
std::string CudaDeviceDescription(int device_idx = 0);

}  // namespace shoal::kernels
