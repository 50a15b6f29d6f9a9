// CUDA kernels of the shortlist ops. Scoring gives one warp to each (query, label) entry: the
// warp streams the label's weight row with 16-byte loads while the query row, shared by the
// row's entries, stays hot in L1/L2. The query gradient gives one thread to each output
// column and sums in a fixed order, so it is deterministic without atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_launch.cuh"
#include "common/topk_key.h"
#include "shortlist/shortlist_kernels.h"

namespace xcops::shortlist {
namespace {

using at::Tensor;

constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kColumnThreads = 256;

template <typename scalar_t>
struct alignas(16) Pack16 {
  static constexpr int kCount = 16 / sizeof(scalar_t);
  scalar_t v[kCount];
};

// Row r owns entries [indptr[r], indptr[r+1]); returns the r holding entry e (< nnz).
template <typename index_t>
__device__ __forceinline__ int64_t row_of_entry(const index_t* indptr, int64_t rows, int64_t e) {
  int64_t lo = 0, hi = rows;  // indptr[lo] <= e < indptr[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (indptr[mid] <= e) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t warp_dot(const scalar_t* __restrict__ a,
                                          const scalar_t* __restrict__ b, int64_t d,
                                          bool vectorized, int lane) {
  acc_t acc = 0;
  if (vectorized) {
    using Pack = Pack16<scalar_t>;
    const Pack* a_packs = reinterpret_cast<const Pack*>(a);
    const Pack* b_packs = reinterpret_cast<const Pack*>(b);
    const int64_t packs = d / Pack::kCount;
    for (int64_t j = lane; j < packs; j += kWarpSize) {
      const Pack x = a_packs[j];
      const Pack y = b_packs[j];
#pragma unroll
      for (int i = 0; i < Pack::kCount; ++i) acc += acc_t(x.v[i]) * acc_t(y.v[i]);
    }
  } else {
    for (int64_t j = lane; j < d; j += kWarpSize) acc += acc_t(a[j]) * acc_t(b[j]);
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  }
  return acc;
}

template <typename scalar_t, typename index_t, typename Epilogue>
__global__ void __launch_bounds__(kWarpSize* kWarpsPerBlock)
    score_kernel(const scalar_t* __restrict__ query, const scalar_t* __restrict__ weight,
                 const scalar_t* __restrict__ bias, const index_t* __restrict__ indptr,
                 const index_t* __restrict__ indices, int64_t rows, int64_t nnz, int64_t d,
                 bool vectorized, Epilogue epilogue) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t e = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (e >= nnz) return;  // uniform across the warp
  const int64_t label = indices[e];
  const int64_t row = row_of_entry(indptr, rows, e);
  if (label < 0) {
    if (lane == 0) epilogue.pad(e, row);
    return;
  }
  acc_t s = warp_dot<scalar_t, acc_t>(query + row * d, weight + label * d, d, vectorized, lane);
  if (lane == 0) {
    if (bias != nullptr) s += acc_t(bias[label]);
    epilogue(e, row, label, s);
  }
}

template <typename scalar_t>
struct WriteScore {
  scalar_t* scores;
  template <typename acc_t>
  __device__ void operator()(int64_t e, int64_t, int64_t, acc_t s) const {
    scores[e] = scalar_t(s);
  }
  __device__ void pad(int64_t e, int64_t) const { scores[e] = scalar_t(0); }
};

struct WriteKey {
  int64_t* keys;
  template <typename acc_t>
  __device__ void operator()(int64_t e, int64_t, int64_t label, acc_t s) const {
    keys[e] = pack_topk_key(float(s), label);
  }
  __device__ void pad(int64_t e, int64_t) const { keys[e] = kEmptyTopkKey; }
};

bool is_aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename scalar_t, typename index_t, typename Epilogue>
void launch_score(const Tensor& query, const Tensor& weight, const Tensor& indptr,
                  const Tensor& indices, const std::optional<Tensor>& bias, Epilogue epilogue) {
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t nnz = indices.numel(), d = query.size(1);
  const bool vectorized = d % Pack16<scalar_t>::kCount == 0 &&
                          is_aligned16(query.const_data_ptr()) &&
                          is_aligned16(weight.const_data_ptr());
  score_kernel<scalar_t, index_t><<<warp_grid(nnz, kWarpsPerBlock), kWarpSize * kWarpsPerBlock, 0,
                                    c10::cuda::getCurrentCUDAStream()>>>(
      query.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
      bias ? bias->const_data_ptr<scalar_t>() : nullptr, indptr.const_data_ptr<index_t>(),
      indices.const_data_ptr<index_t>(), query.size(0), nnz, d, vectorized, epilogue);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename index_t>
__global__ void backward_query_kernel(const scalar_t* __restrict__ grad,
                                      const scalar_t* __restrict__ weight,
                                      const index_t* __restrict__ indptr,
                                      const index_t* __restrict__ indices,
                                      scalar_t* __restrict__ grad_query, int64_t d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = blockIdx.x;
  const int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (j >= d) return;
  acc_t acc = 0;
  for (int64_t e = indptr[row]; e < indptr[row + 1]; ++e) {
    const int64_t label = indices[e];
    if (label >= 0) acc += acc_t(grad[e]) * acc_t(weight[label * d + j]);
  }
  grad_query[row * d + j] = scalar_t(acc);
}


}  // namespace

void score_cuda(const Tensor& query, const Tensor& weight, const Tensor& indptr,
                const Tensor& indices, const std::optional<Tensor>& bias, const Tensor& scores) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "score_cuda", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "score_cuda", [&] {
      launch_score<scalar_t, index_t>(query, weight, indptr, indices, bias,
                                      WriteScore<scalar_t>{scores.data_ptr<scalar_t>()});
    });
  });
}

void score_keys_cuda(const Tensor& query, const Tensor& weight, const Tensor& indptr,
                     const Tensor& indices, const std::optional<Tensor>& bias, const Tensor& keys) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "score_keys_cuda", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "score_keys_cuda", [&] {
      launch_score<scalar_t, index_t>(
          query, weight, indptr, indices, bias,
          WriteKey{keys.data_ptr<int64_t>()});
    });
  });
}

void backward_query_cuda(const Tensor& grad, const Tensor& weight, const Tensor& indptr,
                         const Tensor& indices, const Tensor& grad_query) {
  const c10::cuda::CUDAGuard guard(weight.device());
  const int64_t d = grad_query.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, weight.scalar_type(), "backward_query_cuda", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "backward_query_cuda", [&] {
      backward_query_kernel<scalar_t, index_t>
          <<<column_grid(grad_query.size(0), d, kColumnThreads), kColumnThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
              grad.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
              indptr.const_data_ptr<index_t>(), indices.const_data_ptr<index_t>(),
              grad_query.data_ptr<scalar_t>(), d);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace xcops::shortlist
