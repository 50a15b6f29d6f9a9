// CUDA kernel of balanced k-means: the sort keys of a level-wide split. The rest of the GPU
// algorithm composes existing kernels (clustering_ops.cpp).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "clustering/kmeans_kernels.h"

namespace xcops::clustering {
namespace {

constexpr int kThreads = 256;

__global__ void pack_split_keys_kernel(const float* __restrict__ scores,
                                       const int64_t* __restrict__ node_of_pos,
                                       int64_t* __restrict__ keys, int64_t n) {
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= n) return;
  const float score = scores[p];
  // -0 and +0 must tie, as they do in the CPU's comparison.
  const uint32_t bits = score == 0.0f ? 0u : __float_as_uint(score);
  // Unsigned order of `ordered` is float order: flip all bits of negatives, set the sign bit
  // of non-negatives. Node ids < 2^31 keep the key non-negative, so signed order agrees.
  const uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  keys[p] = int64_t((uint64_t(node_of_pos[p]) << 32) | uint64_t(ordered));
}

}  // namespace

void pack_split_keys_cuda(const at::Tensor& scores, const at::Tensor& node_of_pos,
                          const at::Tensor& keys) {
  const c10::cuda::CUDAGuard guard(scores.device());
  const int64_t n = scores.numel();
  if (n == 0) return;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  TORCH_CHECK(scores.scalar_type() == at::kFloat, "pack_split_keys_cuda: float32 scores only, got ",
              scores.scalar_type());
  pack_split_keys_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                           c10::cuda::getCurrentCUDAStream()>>>(
      scores.const_data_ptr<float>(), node_of_pos.const_data_ptr<int64_t>(),
      keys.data_ptr<int64_t>(), n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace xcops::clustering
