#include "kernels/device.h"

namespace shoal::kernels {

int CudaDeviceCount() { return 0; }
std::string CudaDeviceDescription(int) { return "none: built without CUDA"; }

}  // namespace shoal::kernels
