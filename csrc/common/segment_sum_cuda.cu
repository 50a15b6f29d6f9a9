// One thread per (segment, output column): each thread walks its segment in order, so sums
// are deterministic; consecutive threads read consecutive columns of a source row.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_launch.cuh"
#include "common/segment_sum.h"

namespace xcops {
namespace {

constexpr int kColumnThreads = 256;

template <typename scalar_t>
__global__ void segment_row_sum_kernel(const scalar_t* __restrict__ coeff,
                                       const int64_t* __restrict__ coeff_index,
                                       const scalar_t* __restrict__ source,
                                       const int64_t* __restrict__ source_index,
                                       const int64_t* __restrict__ offsets,
                                       scalar_t* __restrict__ out_rows,
                                       scalar_t* __restrict__ out_coeffs, int64_t d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t segment = blockIdx.x;
  const int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  const bool owns_coeff_sum = blockIdx.y == 0 && threadIdx.x == 0;
  if (j >= d && !owns_coeff_sum) return;
  acc_t acc = 0, coeff_sum = 0;
  for (int64_t t = offsets[segment]; t < offsets[segment + 1]; ++t) {
    const acc_t scale = acc_t(coeff[coeff_index[t]]);
    coeff_sum += scale;
    if (j < d) acc += scale * acc_t(source[source_index[t] * d + j]);
  }
  if (j < d) out_rows[segment * d + j] = scalar_t(acc);
  if (owns_coeff_sum) out_coeffs[segment] = scalar_t(coeff_sum);
}

}  // namespace

void segment_row_sum_cuda(const at::Tensor& coeff, const at::Tensor& coeff_index,
                          const at::Tensor& source, const at::Tensor& source_index,
                          const at::Tensor& offsets, const at::Tensor& out_rows,
                          const at::Tensor& out_coeffs) {
  const c10::cuda::CUDAGuard guard(source.device());
  const int64_t segments = out_rows.size(0), d = out_rows.size(1);
  if (segments == 0) return;
  const dim3 grid = column_grid(segments, d, kColumnThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, source.scalar_type(), "segment_row_sum_cuda", [&] {
    segment_row_sum_kernel<scalar_t><<<grid, kColumnThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        coeff.const_data_ptr<scalar_t>(), coeff_index.const_data_ptr<int64_t>(),
        source.const_data_ptr<scalar_t>(), source_index.const_data_ptr<int64_t>(),
        offsets.const_data_ptr<int64_t>(), out_rows.data_ptr<scalar_t>(),
        out_coeffs.data_ptr<scalar_t>(), d);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace xcops
