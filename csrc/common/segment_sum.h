#pragma once
// Ordered, deterministic segmented sums of scaled rows: the CPU weight gradient of the
// shortlist ops and the GPU centroid update of balanced k-means are both this (the CUDA
// weight gradient has its own warp-per-label kernel in shortlist_cuda.cu). Segment s covers positions
// [offsets[s], offsets[s+1]) of a sorted order:
//   out_rows[s]   = sum_t coeff[coeff_index[t]] * source[source_index[t]]
//   out_coeffs[s] = sum_t coeff[coeff_index[t]]
// summed in t order with float32 (float64 for float64) accumulation; no atomics.
// coeff, source and the outputs share one float dtype; the index tensors and offsets are
// int64; everything is contiguous and on one device.
#include <ATen/core/Tensor.h>

namespace xcops {

void segment_row_sum_cpu(const at::Tensor& coeff, const at::Tensor& coeff_index,
                         const at::Tensor& source, const at::Tensor& source_index,
                         const at::Tensor& offsets, const at::Tensor& out_rows,
                         const at::Tensor& out_coeffs);
#ifdef XCOPS_WITH_CUDA
void segment_row_sum_cuda(const at::Tensor& coeff, const at::Tensor& coeff_index,
                          const at::Tensor& source, const at::Tensor& source_index,
                          const at::Tensor& offsets, const at::Tensor& out_rows,
                          const at::Tensor& out_coeffs);
#endif

// Dispatches on the device of `source`.
inline void segment_row_sum(const at::Tensor& coeff, const at::Tensor& coeff_index,
                            const at::Tensor& source, const at::Tensor& source_index,
                            const at::Tensor& offsets, const at::Tensor& out_rows,
                            const at::Tensor& out_coeffs) {
#ifdef XCOPS_WITH_CUDA
  if (source.is_cuda()) {
    segment_row_sum_cuda(coeff, coeff_index, source, source_index, offsets, out_rows, out_coeffs);
    return;
  }
#endif
  segment_row_sum_cpu(coeff, coeff_index, source, source_index, offsets, out_rows, out_coeffs);
}

}  // namespace xcops
