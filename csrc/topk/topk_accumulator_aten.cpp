#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/topk.h>

#include <limits>

#include "topk/topk_accumulator.h"

namespace xcops::topk {
namespace {

constexpr double kMinusInf = -std::numeric_limits<double>::infinity();

class AtenTopkAccumulator final : public TopkAccumulator {
 public:
  AtenTopkAccumulator(int64_t rows, int64_t k, const at::TensorOptions& options)
      : k_(k),
        values_(at::full({rows, k}, kMinusInf, options)),
        ids_(at::full({rows, k}, -1, options.dtype(at::kLong))) {}

  void add(const at::Tensor& scores, int64_t begin) override {
    auto [chunk_values, chunk_ids] = at::topk(scores, std::min(k_, scores.size(1)), 1, true, false);
    const at::Tensor merged_ids = at::cat({ids_, chunk_ids + begin}, 1);
    auto [top_values, slots] = at::topk(at::cat({values_, chunk_values}, 1), k_, 1, true, false);
    values_ = top_values;
    ids_ = merged_ids.gather(1, slots);
  }

  std::tuple<at::Tensor, at::Tensor> finish() override {
    auto [values, order] = values_.sort(1, /*descending=*/true);
    at::Tensor ids = ids_.gather(1, order);
    ids.masked_fill_(values == kMinusInf, -1);  // excluded labels are no candidates
    return {values, ids};
  }

 private:
  int64_t k_;
  at::Tensor values_, ids_;
};

}  // namespace

std::unique_ptr<TopkAccumulator> make_aten_topk_accumulator(int64_t rows, int64_t k,
                                                            const at::TensorOptions& options) {
  return std::make_unique<AtenTopkAccumulator>(rows, k, options);
}

}  // namespace xcops::topk
