#pragma once
// The CUDA running top-k of one score chunk (chunk_topk_cuda.cu).
#include <ATen/core/Tensor.h>

namespace xcops::topk {

constexpr int64_t kChunkTopkCudaMaxK = 1024;

// Folds the float32 scores [R, W] of labels [begin, begin + W) into keys [R, k] (the rows'
// running top-k as packed keys of common/topk_key.h, unordered, kEmptyTopkKey where empty),
// on the current stream. -inf scores are no candidates. k <= kChunkTopkCudaMaxK.
void chunk_topk_cuda(const at::Tensor& scores, int64_t begin, const at::Tensor& keys);

}  // namespace xcops::topk
