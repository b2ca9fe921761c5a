// lowbit.hpp: the umbrella header; includes every public part of lowbit.
#pragma once

#include <lowbit/core/error.hpp>
#include <lowbit/core/metrics.hpp>
#include <lowbit/core/packing.hpp>
#include <lowbit/core/quant_params.hpp>
#include <lowbit/core/quantize.hpp>
#include <lowbit/core/quantized_matrix.hpp>
#include <lowbit/core/scheme.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/calib/observer.hpp>
#include <lowbit/calib/minmax_observer.hpp>
#include <lowbit/calib/moving_average_observer.hpp>
#include <lowbit/ptq/calibration.hpp>
#include <lowbit/ptq/gamma_search.hpp>
#include <lowbit/ptq/layer_error.hpp>
#include <lowbit/ptq/result.hpp>
#include <lowbit/ptq/rtn.hpp>
#include <lowbit/ptq/gptq.hpp>
#include <lowbit/gemm/activation_quant.hpp>
#include <lowbit/gemm/cpu.hpp>
#include <lowbit/gemm/epilogue.hpp>
#include <lowbit/gemm/linear.hpp>
#include <lowbit/gemm/packed_weights.hpp>
#include <lowbit/io/gguf.hpp>
