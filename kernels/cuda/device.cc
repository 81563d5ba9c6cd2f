#include <cuda_runtime.h>

#include <string>

#include "kernels/device.h"

namespace shoal::kernels {

int CudaDeviceCount() {
  int count = 0;  // cudaGetDeviceCount leaves it untouched on error 35 (no driver)
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return count;
}

std::string CudaDeviceDescription(int device_idx) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("none: ") + cudaGetErrorName(err);
  }
  if (device_idx >= count) return "none: no device " + std::to_string(device_idx);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device_idx) != cudaSuccess) return "none: cudaGetDeviceProperties failed";
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
         std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
}

}  // namespace shoal::kernels
