// Each row keeps up to 2k candidates above a running threshold (the k-th best score so far);
// when the buffer fills, nth_element trims it back to k. After the first chunks almost no
// score passes the threshold, so a chunk costs one compare per score.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/topk_key.h"
#include "topk/topk_accumulator.h"

namespace xcops::topk {
namespace {

template <typename score_t>
class CpuTopkAccumulator final : public TopkAccumulator {
  struct Candidate {
    score_t score;
    int64_t label;
  };
  static bool better(const Candidate& a, const Candidate& b) {
    return ranks_before(a.score, a.label, b.score, b.label);
  }

 public:
  CpuTopkAccumulator(int64_t rows, int64_t k)
      : k_(k), candidates_(rows), thresholds_(rows, -std::numeric_limits<score_t>::infinity()) {
    for (auto& row : candidates_) row.reserve(2 * k);
  }

  void add(const at::Tensor& scores, int64_t begin) override {
    const int64_t width = scores.size(1);
    const score_t* data = scores.const_data_ptr<score_t>();
    at::parallel_for(0, int64_t(candidates_.size()), std::max<int64_t>(1, 65536 / std::max<int64_t>(1, width)),
                     [&](int64_t row_begin, int64_t row_end) {
                       for (int64_t r = row_begin; r < row_end; ++r) add_row(r, data + r * width, width, begin);
                     });
  }

  std::tuple<at::Tensor, at::Tensor> finish() override {
    const int64_t rows = candidates_.size();
    at::Tensor values = at::empty({rows, k_}, at::CPU(c10::CppTypeToScalarType<score_t>::value));
    at::Tensor ids = at::empty({rows, k_}, at::CPU(at::kLong));
    score_t* v = values.data_ptr<score_t>();
    int64_t* id = ids.data_ptr<int64_t>();
    at::parallel_for(0, rows, 64, [&](int64_t row_begin, int64_t row_end) {
      for (int64_t r = row_begin; r < row_end; ++r) {
        auto& row = candidates_[r];
        trim(row);
        std::sort(row.begin(), row.end(), better);
        for (int64_t j = 0; j < k_; ++j) {
          const bool filled = j < int64_t(row.size());
          v[r * k_ + j] = filled ? row[j].score : -std::numeric_limits<score_t>::infinity();
          id[r * k_ + j] = filled ? row[j].label : -1;
        }
      }
    });
    return {values, ids};
  }

 private:
  void add_row(int64_t r, const score_t* scores, int64_t width, int64_t begin) {
    auto& row = candidates_[r];
    score_t threshold = thresholds_[r];
    for (int64_t j = 0; j < width; ++j) {
      const score_t s = scores[j];
      // `>=` lets a tie with the threshold in, so the lower label can win it; -inf (excluded)
      // never passes; NaN passes unless k NaNs of lower labels are already kept.
      if ((s >= threshold || (s != s && threshold == threshold)) &&
          s != -std::numeric_limits<score_t>::infinity()) {
        row.push_back({s, begin + j});
        if (int64_t(row.size()) == 2 * k_) threshold = trim(row);
      }
    }
    thresholds_[r] = threshold;
  }

  // Keeps the k best candidates; returns the new threshold (the k-th best, once k are known).
  score_t trim(std::vector<Candidate>& row) const {
    if (int64_t(row.size()) <= k_) return -std::numeric_limits<score_t>::infinity();
    std::nth_element(row.begin(), row.begin() + (k_ - 1), row.end(), better);
    row.resize(k_);
    return row[k_ - 1].score;
  }

  int64_t k_;
  std::vector<std::vector<Candidate>> candidates_;
  std::vector<score_t> thresholds_;
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
