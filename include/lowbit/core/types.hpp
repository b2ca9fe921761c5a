// types.hpp: the Eigen matrix vocabulary of lowbit's API (row-major, as PyTorch's Linear and GGUF).
#pragma once

#include <Eigen/Core>

#include <cstdint>

namespace lowbit {

/// Row-major float matrix; weights are [out_features, in_features], activations [tokens, features].
using MatrixXfR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Row-major int32 matrix: quantized codes and integer accumulators.
using MatrixXiR = Eigen::Matrix<int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Row-major double matrix: rows being transformed in double (e.g. by a rotation).
using MatrixXdR = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Index = Eigen::Index;

}  // namespace lowbit
