// (kernels/dtype.h is header-only; this translation unit keeps the CPU kernel library non-empty.)
#include "kernels/dtype.h"
