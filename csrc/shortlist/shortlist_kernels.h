#pragma once
// Device kernels of the shortlist ops. The ops in shortlist_ops.cpp check arguments, allocate
// outputs and call these; each exists for the CPU (shortlist_cpu.cpp) and, when built with
// CUDA, for the GPU (shortlist_cuda.cu). Arguments are already validated here.
#include <ATen/core/Tensor.h>

#include <optional>

namespace xcops::shortlist {

// scores[e] = <query[row(e)], weight[indices[e]]> + bias[indices[e]]; 0 where indices[e] < 0.
// `scores` is [nnz] of the query dtype.
// keys: the same scores (float32 accumulation) packed with their labels (common/topk_key.h)
// into keys[e] of an [nnz] int64 tensor; kEmptyTopkKey where indices[e] < 0.
#define XCOPS_SHORTLIST_KERNELS(DEVICE)                                                           \
  void score_##DEVICE(const at::Tensor& query, const at::Tensor& weight, const at::Tensor& indptr, \
                      const at::Tensor& indices, const std::optional<at::Tensor>& bias,           \
                      const at::Tensor& scores);                                                  \
  void score_keys_##DEVICE(const at::Tensor& query, const at::Tensor& weight,                     \
                           const at::Tensor& indptr, const at::Tensor& indices,                   \
                           const std::optional<at::Tensor>& bias, const at::Tensor& keys);        \
  /* grad_query[b] = sum over entries e of row b (indices[e] >= 0) of grad[e] * weight[indices[e]] */ \
  void backward_query_##DEVICE(const at::Tensor& grad, const at::Tensor& weight,                  \
                               const at::Tensor& indptr, const at::Tensor& indices,               \
                               const at::Tensor& grad_query);

XCOPS_SHORTLIST_KERNELS(cpu)

// The CPU's own shortlist top-k: per row, the scores (in float32, float64 for float64) of its
// entries selected in the ranking of common/topk_key.h, with a per-thread buffer of the row's
// length only. values [B, k] of the query dtype, labels [B, k] int64; (-inf, -1) where empty.
void topk_cpu(const at::Tensor& query, const at::Tensor& weight, const at::Tensor& indptr,
              const at::Tensor& indices, const std::optional<at::Tensor>& bias,
              const at::Tensor& values, const at::Tensor& labels);
#ifdef XCOPS_WITH_CUDA
XCOPS_SHORTLIST_KERNELS(cuda)
#endif
#undef XCOPS_SHORTLIST_KERNELS

}  // namespace xcops::shortlist
