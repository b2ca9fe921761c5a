// kernels_neon.hpp: AArch64 kernels: NEON (widening multiplies) and NEON with sdot (dotprod).
#pragma once
