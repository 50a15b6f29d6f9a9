#pragma once
// Device kernels of the shortlist ops. The ops in shortlist_ops.cpp check arguments, allocate
// outputs and call these; each exists for the CPU (shortlist_cpu.cpp) and, when built with
// CUDA, for the GPU (shortlist_cuda.cu). Arguments are already validated here.
#include <ATen/core/Tensor.h>

#include <optional>

namespace xcops::shortlist {

// scores[e] = <query[row(e)], weight[indices[e]]> + bias[indices[e]]; 0 where indices[e] < 0.
// `scores` is [nnz] of the query dtype.
// keys: the same scores packed with their labels (common/topk_key.h) into keys[row, e - indptr[row]]
// of a [B, width] int64 tensor already filled with kEmptyTopkKey.
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
#ifdef XCOPS_WITH_CUDA
XCOPS_SHORTLIST_KERNELS(cuda)

// The weight gradient over the entries sorted by label (sorted_labels ascending with the -1
// padding first, order[t] = the entry at sorted position t). For the run of label l >= 0 that
// starts at position t: rows[dest] = sum over the run, in run order, of grad[e] * query[row(e)],
// bias[dest] = the sum of grad[e], and labels[dest] = l when labels is given; dest is
// run_dest[t], or l itself without run_dest. One warp per run, no atomics, no host sync.
void backward_weight_cuda(const at::Tensor& grad, const at::Tensor& query, const at::Tensor& indptr,
                          const at::Tensor& sorted_labels, const at::Tensor& order,
                          const std::optional<at::Tensor>& run_dest, const at::Tensor& rows,
                          const at::Tensor& bias, const std::optional<at::Tensor>& labels);
#endif
#undef XCOPS_SHORTLIST_KERNELS

}  // namespace xcops::shortlist
