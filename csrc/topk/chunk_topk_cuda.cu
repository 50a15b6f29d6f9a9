// One block per row. The row's running top-k keys and every chunk score whose key beats the
// running threshold (the k-th best key) gather in a shared-memory candidate buffer; when it
// could overflow, and at the end, a block-wide bitonic sort keeps the k best and raises the
// threshold. After the first chunks almost no score passes, so a chunk costs one coalesced
// read and one compare per score: one kernel per chunk, no [R, W] keys or sort of the chunk.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cfloat>

#include "common/cuda_launch.cuh"
#include "common/topk_key.h"
#include "topk/chunk_topk_cuda.h"

namespace xcops::topk {
namespace {

constexpr int kThreads = 256;
constexpr int kCandidates = 2048;  // room for new candidates next to the k running keys

// Sorts keys[0, n) descending (n <= the buffer's power-of-two size, padded with empty keys).
__device__ void sort_descending(int64_t* keys, int n) {
  int size = 1;
  while (size < n) size <<= 1;
  for (int i = n + threadIdx.x; i < size; i += blockDim.x) keys[i] = kEmptyTopkKey;
  __syncthreads();
  for (int span = 2; span <= size; span <<= 1) {
    for (int stride = span >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < size; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const int64_t a = keys[i], b = keys[j];
          const bool descending = (i & span) == 0;
          if (descending ? a < b : a > b) {
            keys[i] = b;
            keys[j] = a;
          }
        }
      }
      __syncthreads();
    }
  }
}

__global__ void chunk_topk_kernel(const float* __restrict__ scores, int64_t width, int64_t begin,
                                  int64_t* __restrict__ running, int k) {
  extern __shared__ int64_t candidates[];
  __shared__ int count;
  __shared__ int64_t threshold;
  const float* row_scores = scores + int64_t(blockIdx.x) * width;
  int64_t* row_keys = running + int64_t(blockIdx.x) * k;
  for (int i = threadIdx.x; i < k; i += blockDim.x) candidates[i] = row_keys[i];
  if (threadIdx.x == 0) count = k;
  __syncthreads();
  sort_descending(candidates, k);
  if (threadIdx.x == 0) threshold = candidates[k - 1];
  __syncthreads();
  for (int64_t base = 0; base < width; base += blockDim.x) {
    const int64_t j = base + threadIdx.x;
    if (j < width) {
      const float s = row_scores[j];
      const int64_t key = pack_topk_key(s, begin + j);
      // !(s < -FLT_MAX): anything but -inf, NaN included
      if (key > threshold && !(s < -FLT_MAX)) candidates[atomicAdd(&count, 1)] = key;
    }
    __syncthreads();
    if (count > kCandidates + k - int(blockDim.x)) {  // the next pass might not fit
      sort_descending(candidates, count);
      if (threadIdx.x == 0) {
        count = k;
        threshold = candidates[k - 1];
      }
    }
    __syncthreads();
  }
  if (count > k) sort_descending(candidates, count);
  for (int i = threadIdx.x; i < k; i += blockDim.x) row_keys[i] = candidates[i];
}

int buffer_keys(int k) {
  int size = 1;
  while (size < kCandidates + k) size <<= 1;
  return size;
}

}  // namespace

void chunk_topk_cuda(const at::Tensor& scores, int64_t begin, const at::Tensor& keys) {
  const int64_t rows = scores.size(0), width = scores.size(1), k = keys.size(1);
  TORCH_CHECK(k >= 1 && k <= kChunkTopkCudaMaxK, "xcops: chunk_topk_cuda needs 1 <= k <= ",
              kChunkTopkCudaMaxK, ", got ", k);
  if (rows == 0 || width == 0) return;
  const c10::cuda::CUDAGuard guard(scores.device());
  const size_t shared = sizeof(int64_t) * buffer_keys(int(k));
  chunk_topk_kernel<<<column_grid(rows, 1, kThreads), kThreads, shared,
                      c10::cuda::getCurrentCUDAStream()>>>(scores.const_data_ptr<float>(), width, begin,
                                                           keys.data_ptr<int64_t>(), int(k));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace xcops::topk
