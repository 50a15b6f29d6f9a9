// CUDA kernels of the shortlist ops. Scoring gives one warp to each (query, label) entry: the
// warp issues all its 16-byte loads of the label's weight row (and of the query row, shared
// by the row's entries and hot in L1/L2) before the first FMA, so a d = 768 bf16 row costs one
// memory round trip, not three. The query gradient gives one thread to each output column and
// the weight gradient one warp to each run of a label in label order; both sum in a fixed
// order, so they are deterministic without atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "common/cuda_launch.cuh"
#include "common/topk_key.h"
#include "shortlist/shortlist_kernels.h"

namespace xcops::shortlist {
namespace {

using at::Tensor;

constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kColumnThreads = 256;
// Vector loads each lane has in flight before it uses them: 32 lanes x 4 x 16 bytes cover a
// 1024-column bf16 row (2 KB) in one round trip.
constexpr int kLoadsPerLane = 4;

// kVec consecutive elements, loaded or stored as one access: 16 bytes where the row base is
// 16-byte aligned and d is a multiple of kVec, else kVec = 1.
template <typename scalar_t, int kVec>
struct alignas(sizeof(scalar_t) * kVec) Vec {
  scalar_t v[kVec];
};

template <typename scalar_t>
constexpr int kVec16 = 16 / sizeof(scalar_t);

bool is_aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Calls launch(std::integral_constant<int, kVec>) with 16-byte vectors when d is a multiple of
// the vector width and every row base is 16-byte aligned, else with kVec = 1.
template <typename scalar_t, typename Launch>
void with_vector_width(int64_t d, std::initializer_list<const void*> bases, const Launch& launch) {
  bool aligned = d % kVec16<scalar_t> == 0;
  for (const void* p : bases) aligned = aligned && is_aligned16(p);
  if (aligned) {
    launch(std::integral_constant<int, kVec16<scalar_t>>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

// The width of a padded shortlist (every row has nnz / rows entries) as the guess of
// row_of_entry; 0 when rows cannot all have the same length.
int64_t padded_width(int64_t rows, int64_t nnz) {
  return rows > 0 && nnz % rows == 0 ? nnz / rows : 0;
}

// Row r owns entries [indptr[r], indptr[r+1]); returns the r holding entry e (0 <= e < nnz).
// A padded shortlist's row is e / width, confirmed by two loads; other CSRs binary-search.
template <typename index_t>
__device__ __forceinline__ int64_t row_of_entry(const index_t* __restrict__ indptr, int64_t rows,
                                                int64_t width, int64_t e) {
  if (width > 0) {
    const int64_t guess = e / width;
    if (int64_t(indptr[guess]) <= e && e < int64_t(indptr[guess + 1])) return guess;
  }
  int64_t lo = 0, hi = rows;  // indptr[lo] <= e < indptr[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (int64_t(indptr[mid]) <= e) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Column of the i-th load of `lane` in the pass starting at column `base`.
template <int kVec>
__device__ __forceinline__ int64_t load_column(int64_t base, int i, int lane) {
  return base + (int64_t(i) * kWarpSize + lane) * kVec;
}

template <int kVec>
constexpr int64_t kColumnsPerPass = int64_t(kWarpSize) * kLoadsPerLane * kVec;

template <typename scalar_t, int kVec, typename acc_t>
__device__ __forceinline__ acc_t warp_dot(const scalar_t* __restrict__ a,
                                          const scalar_t* __restrict__ b, int64_t d, int lane) {
  using V = Vec<scalar_t, kVec>;
  acc_t acc = 0;
  for (int64_t base = 0; base < d; base += kColumnsPerPass<kVec>) {
    V x[kLoadsPerLane], y[kLoadsPerLane];
#pragma unroll
    for (int i = 0; i < kLoadsPerLane; ++i) {
      const int64_t j = load_column<kVec>(base, i, lane);
      if (j < d) {  // d % kVec == 0, so the whole vector is in the row
        x[i] = *reinterpret_cast<const V*>(a + j);
        y[i] = *reinterpret_cast<const V*>(b + j);
      }
    }
#pragma unroll
    for (int i = 0; i < kLoadsPerLane; ++i) {
      if (load_column<kVec>(base, i, lane) < d) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) acc += acc_t(x[i].v[k]) * acc_t(y[i].v[k]);
      }
    }
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  }
  return acc;
}

template <typename scalar_t, typename index_t, int kVec, typename Epilogue>
__global__ void __launch_bounds__(kWarpSize* kWarpsPerBlock)
    score_kernel(const scalar_t* __restrict__ query, const scalar_t* __restrict__ weight,
                 const scalar_t* __restrict__ bias, const index_t* __restrict__ indptr,
                 const index_t* __restrict__ indices, int64_t rows, int64_t width, int64_t nnz,
                 int64_t d, Epilogue epilogue) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t e = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (e >= nnz) return;  // uniform across the warp
  const int64_t label = indices[e];
  const int64_t row = row_of_entry(indptr, rows, width, e);
  if (label < 0) {
    if (lane == 0) epilogue.pad(e, row);
    return;
  }
  acc_t s = warp_dot<scalar_t, kVec, acc_t>(query + row * d, weight + label * d, d, lane);
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

template <typename scalar_t, typename index_t, typename Epilogue>
void launch_score(const Tensor& query, const Tensor& weight, const Tensor& indptr,
                  const Tensor& indices, const std::optional<Tensor>& bias, Epilogue epilogue) {
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t rows = query.size(0), nnz = indices.numel(), d = query.size(1);
  if (nnz == 0) return;  // a grid of 0 blocks is a launch error
  auto launch = [&](auto vec) {
    constexpr int kVec = decltype(vec)::value;
    score_kernel<scalar_t, index_t, kVec>
        <<<warp_grid(nnz, kWarpsPerBlock), kWarpSize * kWarpsPerBlock, 0,
           c10::cuda::getCurrentCUDAStream()>>>(
            query.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
            bias ? bias->const_data_ptr<scalar_t>() : nullptr, indptr.const_data_ptr<index_t>(),
            indices.const_data_ptr<index_t>(), rows, padded_width(rows, nnz), nnz, d, epilogue);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  with_vector_width<scalar_t>(d, {query.const_data_ptr(), weight.const_data_ptr()}, launch);
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

// One warp per sorted position; only the first position of a run of a label >= 0 works. The
// warp fetches the run's (grad, row) pairs 32 at a time, one per lane, and broadcasts them;
// each lane owns kLoadsPerLane vectors of columns per pass over the row, loaded before use.
template <typename scalar_t, typename index_t, int kVec>
__global__ void __launch_bounds__(kWarpSize* kWarpsPerBlock)
    backward_weight_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ query,
                           const index_t* __restrict__ indptr,
                           const index_t* __restrict__ sorted_labels,
                           const int64_t* __restrict__ order, const int64_t* __restrict__ run_dest,
                           scalar_t* __restrict__ out_rows, scalar_t* __restrict__ out_bias,
                           int64_t* __restrict__ out_labels, int64_t rows, int64_t width,
                           int64_t nnz, int64_t d) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vec<scalar_t, kVec>;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t start = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (start >= nnz) return;  // uniform across the warp, as are the tests below
  const int64_t label = sorted_labels[start];
  if (label < 0 || (start > 0 && int64_t(sorted_labels[start - 1]) == label)) return;
  const int64_t dest = run_dest != nullptr ? run_dest[start] : label;
  acc_t bias_sum = 0;
  // One pass even when d == 0: it still sums the run's bias gradient.
  for (int64_t base = 0; base == 0 || base < d; base += kColumnsPerPass<kVec>) {
    acc_t acc[kLoadsPerLane][kVec];
#pragma unroll
    for (int i = 0; i < kLoadsPerLane; ++i) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) acc[i][k] = 0;
    }
    for (int64_t chunk = start;; chunk += kWarpSize) {
      // Positions of a run are consecutive, so the lanes inside it are a prefix of the warp.
      const int64_t mine = chunk + lane;
      const bool in_run = mine < nnz && int64_t(sorted_labels[mine]) == label;
      acc_t g = 0;
      int64_t row = 0;
      if (in_run) {
        const int64_t e = order[mine];
        g = acc_t(grad[e]);
        row = row_of_entry(indptr, rows, width, e);
      }
      const int members = __popc(__ballot_sync(0xffffffffu, in_run));
      for (int m = 0; m < members; ++m) {
        const acc_t gm = __shfl_sync(0xffffffffu, g, m);
        const scalar_t* src = query + __shfl_sync(0xffffffffu, row, m) * d;
        V x[kLoadsPerLane];
#pragma unroll
        for (int i = 0; i < kLoadsPerLane; ++i) {
          const int64_t j = load_column<kVec>(base, i, lane);
          if (j < d) x[i] = *reinterpret_cast<const V*>(src + j);
        }
#pragma unroll
        for (int i = 0; i < kLoadsPerLane; ++i) {
          if (load_column<kVec>(base, i, lane) < d) {
#pragma unroll
            for (int k = 0; k < kVec; ++k) acc[i][k] += gm * acc_t(x[i].v[k]);
          }
        }
        if (base == 0) bias_sum += gm;
      }
      if (members < kWarpSize) break;
    }
    scalar_t* out = out_rows + dest * d;
#pragma unroll
    for (int i = 0; i < kLoadsPerLane; ++i) {
      const int64_t j = load_column<kVec>(base, i, lane);
      if (j < d) {
        V y;
#pragma unroll
        for (int k = 0; k < kVec; ++k) y.v[k] = scalar_t(acc[i][k]);
        *reinterpret_cast<V*>(out + j) = y;
      }
    }
  }
  if (lane == 0) {
    out_bias[dest] = scalar_t(bias_sum);
    if (out_labels != nullptr) out_labels[dest] = label;
  }
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

void backward_weight_cuda(const Tensor& grad, const Tensor& query, const Tensor& indptr,
                          const Tensor& sorted_labels, const Tensor& order,
                          const std::optional<Tensor>& run_dest, const Tensor& rows,
                          const Tensor& bias, const std::optional<Tensor>& labels) {
  const c10::cuda::CUDAGuard guard(query.device());
  const int64_t batch = query.size(0), nnz = sorted_labels.numel(), d = query.size(1);
  if (nnz == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "backward_weight_cuda", [&] {
    AT_DISPATCH_INDEX_TYPES(sorted_labels.scalar_type(), "backward_weight_cuda", [&] {
      auto launch = [&](auto vec) {
        constexpr int kVec = decltype(vec)::value;
        backward_weight_kernel<scalar_t, index_t, kVec>
            <<<warp_grid(nnz, kWarpsPerBlock), kWarpSize * kWarpsPerBlock, 0,
               c10::cuda::getCurrentCUDAStream()>>>(
                grad.const_data_ptr<scalar_t>(), query.const_data_ptr<scalar_t>(),
                indptr.const_data_ptr<index_t>(), sorted_labels.const_data_ptr<index_t>(),
                order.const_data_ptr<int64_t>(),
                run_dest ? run_dest->const_data_ptr<int64_t>() : nullptr, rows.data_ptr<scalar_t>(),
                bias.data_ptr<scalar_t>(), labels ? labels->data_ptr<int64_t>() : nullptr, batch,
                padded_width(batch, nnz), nnz, d);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      with_vector_width<scalar_t>(d, {query.const_data_ptr(), rows.const_data_ptr()}, launch);
    });
  });
}

}  // namespace xcops::shortlist
