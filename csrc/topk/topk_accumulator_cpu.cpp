// The CPU accumulator: a RowTopk per row, rows in parallel.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <vector>

#include "topk/row_topk.h"
#include "topk/topk_accumulator.h"

namespace xcops::topk {
namespace {

template <typename score_t>
class CpuTopkAccumulator final : public TopkAccumulator {
 public:
  CpuTopkAccumulator(int64_t rows, int64_t k) : k_(k), rows_(rows, RowTopk<score_t>(k)) {}

  void add(const at::Tensor& scores, int64_t begin) override {
    const int64_t width = scores.size(1);
    const score_t* data = scores.const_data_ptr<score_t>();
    at::parallel_for(0, int64_t(rows_.size()), std::max<int64_t>(1, 65536 / std::max<int64_t>(1, width)),
                     [&](int64_t row_begin, int64_t row_end) {
                       for (int64_t r = row_begin; r < row_end; ++r) {
                         add_row(rows_[r], data + r * width, width, begin);
                       }
                     });
  }

  std::tuple<at::Tensor, at::Tensor> finish() override {
    const int64_t rows = rows_.size();
    at::Tensor values = at::empty({rows, k_}, at::CPU(c10::CppTypeToScalarType<score_t>::value));
    at::Tensor ids = at::empty({rows, k_}, at::CPU(at::kLong));
    score_t* v = values.data_ptr<score_t>();
    int64_t* id = ids.data_ptr<int64_t>();
    at::parallel_for(0, rows, 64, [&](int64_t row_begin, int64_t row_end) {
      for (int64_t r = row_begin; r < row_end; ++r) rows_[r].write(v + r * k_, id + r * k_);
    });
    return {values, ids};
  }

 private:
  static void add_row(RowTopk<score_t>& row, const score_t* scores, int64_t width, int64_t begin) {
    score_t threshold = row.threshold();  // a local, so the loop is one compare per score
    for (int64_t j = 0; j < width; ++j) {
      if (!(scores[j] < threshold)) {  // also NaN
        row.offer(scores[j], begin + j);
        threshold = row.threshold();
      }
    }
  }

  int64_t k_;
  std::vector<RowTopk<score_t>> rows_;
};

}  // namespace

std::unique_ptr<TopkAccumulator> make_cpu_topk_accumulator(int64_t rows, int64_t k,
                                                           at::ScalarType score_dtype) {
  if (score_dtype == at::kDouble) return std::make_unique<CpuTopkAccumulator<double>>(rows, k);
  TORCH_CHECK(score_dtype == at::kFloat, "xcops: top-k scores must be float32 or float64, got ",
              score_dtype);
  return std::make_unique<CpuTopkAccumulator<float>>(rows, k);
}

}  // namespace xcops::topk
