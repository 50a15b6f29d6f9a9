// The device-generic running top-k, from ATen ops. Every chunk's candidates are merged with
// the running top-k in one top-k per chunk, in the ranking of common/topk_key.h:
// - float32 scores become packed int64 keys (score, label), written next to the running
//   keys in one [rows, k + chunk] buffer, so an integer top-k is exact and tie-stable; on
//   CUDA (k <= 1024) one kernel folds the chunk into the running keys instead, in the same
//   order (XCOPS_GENERIC_TOPK=1 keeps the ATen ops there too);
// - float64 scores do not fit a key: the running top-k (sorted, labels below the chunk's)
//   and the chunk are concatenated in label order and sorted stably, which keeps ties in
//   label order.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/topk.h>

#include <cstdlib>
#include <limits>

#include "common/topk_key.h"
#include "topk/chunk_topk_cuda.h"
#include "topk/topk_accumulator.h"
#include "topk/topk_keys.h"

namespace xcops::topk {
namespace {

constexpr double kMinusInf = -std::numeric_limits<double>::infinity();

// Labels scoring -inf (excluded ones among them) are no candidates.
std::tuple<at::Tensor, at::Tensor> without_minus_inf(at::Tensor values, at::Tensor ids) {
  ids.masked_fill_(values == kMinusInf, -1);
  return {values, ids};
}

class KeyTopkAccumulator final : public TopkAccumulator {
 public:
  // With cuda_kernel, chunks fold into the [rows, k] keys in one kernel (chunk_topk_cuda.h).
  KeyTopkAccumulator(int64_t rows, int64_t k, int64_t max_width, const at::TensorOptions& options,
                     bool cuda_kernel)
      : k_(k),
        cuda_kernel_(cuda_kernel),
        keys_(at::empty({rows, k + (cuda_kernel ? 0 : max_width)}, options.dtype(at::kLong))) {
    keys_.narrow(1, 0, k).fill_(kEmptyTopkKey);
  }

  void add(const at::Tensor& scores, int64_t begin) override {
#ifdef XCOPS_WITH_CUDA
    if (cuda_kernel_) {
      chunk_topk_cuda(scores, begin, keys_);
      return;
    }
#endif
    const int64_t width = scores.size(1);
    pack_topk_keys(scores, keys_.narrow(1, k_, width), begin);
    const at::Tensor top = std::get<0>(
        at::topk(keys_.narrow(1, 0, k_ + width), k_, 1, /*largest=*/true, /*sorted=*/false));
    keys_.narrow(1, 0, k_).copy_(top);
  }

  std::tuple<at::Tensor, at::Tensor> finish() override {
    const at::Tensor best = std::get<0>(keys_.narrow(1, 0, k_).sort(1, /*descending=*/true));
    auto [values, ids] = unpack_topk_keys(best, at::kFloat);
    return without_minus_inf(values, ids);
  }

 private:
  int64_t k_;
  bool cuda_kernel_;
  at::Tensor keys_;  // [rows, k (+ max_width)]: the running top-k keys (then the chunk's keys)
};

class SortTopkAccumulator final : public TopkAccumulator {
 public:
  SortTopkAccumulator(int64_t rows, int64_t k, const at::TensorOptions& options)
      : k_(k),
        values_(at::full({rows, k}, kMinusInf, options)),
        ids_(at::full({rows, k}, -1, options.dtype(at::kLong))) {}

  void add(const at::Tensor& scores, int64_t begin) override {
    const int64_t rows = scores.size(0), width = scores.size(1);
    const at::Tensor chunk_ids =
        at::arange(begin, begin + width, ids_.options()).expand({rows, width});
    auto [sorted, order] = at::cat({values_, scores}, 1).sort(/*stable=*/true, 1, /*descending=*/true);
    values_ = sorted.narrow(1, 0, k_).contiguous();
    ids_ = at::cat({ids_, chunk_ids}, 1).gather(1, order.narrow(1, 0, k_));
  }

  std::tuple<at::Tensor, at::Tensor> finish() override { return without_minus_inf(values_, ids_); }

 private:
  int64_t k_;
  at::Tensor values_, ids_;  // sorted best first
};

}  // namespace

std::unique_ptr<TopkAccumulator> make_aten_topk_accumulator(int64_t rows, int64_t k,
                                                            int64_t max_width,
                                                            const at::TensorOptions& options) {
  if (options.dtype() == at::kDouble) return std::make_unique<SortTopkAccumulator>(rows, k, options);
  return std::make_unique<KeyTopkAccumulator>(rows, k, max_width, options, uses_cuda_topk_kernel(options, k));
}

bool uses_cuda_topk_kernel(const at::TensorOptions& options, int64_t k) {
#ifdef XCOPS_WITH_CUDA
  return options.device().is_cuda() && options.dtype() == at::kFloat && k <= kChunkTopkCudaMaxK &&
         std::getenv("XCOPS_GENERIC_TOPK") == nullptr;
#else
  (void)options;
  (void)k;
  return false;
#endif
}

}  // namespace xcops::topk
