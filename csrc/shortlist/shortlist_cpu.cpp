// CPU kernels of the shortlist ops: multithreaded over query rows (forward, query gradient)
// or over labels (weight gradient), float32 accumulation for reduced precision inputs.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/topk_key.h"
#include "shortlist/shortlist_kernels.h"

namespace xcops::shortlist {
namespace {

using at::Tensor;

// Grain sizes are counts of rows; aim for ~32K multiply-adds per task.
int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item));
}

// Eight independent partial sums let the compiler vectorise without -ffast-math, and the
// fixed summation order keeps results identical from run to run.
template <typename acc_t, typename scalar_t>
acc_t dot(const scalar_t* a, const scalar_t* b, int64_t d) {
  acc_t partial[8] = {};
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int u = 0; u < 8; ++u) partial[u] += acc_t(a[j + u]) * acc_t(b[j + u]);
  }
  acc_t total = 0;
  for (; j < d; ++j) total += acc_t(a[j]) * acc_t(b[j]);
  for (int u = 0; u < 8; ++u) total += partial[u];
  return total;
}

template <typename acc_t, typename scalar_t>
void axpy(acc_t alpha, const scalar_t* x, acc_t* y, int64_t d) {
  for (int64_t j = 0; j < d; ++j) y[j] += alpha * acc_t(x[j]);
}

// Calls visit(entry, row, label, score) for every non-padding entry and pad(entry, row) for
// padding, parallel over rows.
template <typename scalar_t, typename index_t, typename Visit, typename Pad>
void for_each_score(const Tensor& query, const Tensor& weight, const Tensor& indptr,
                    const Tensor& indices, const std::optional<Tensor>& bias, Visit visit,
                    Pad pad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = query.size(0), d = query.size(1);
  const scalar_t* q = query.const_data_ptr<scalar_t>();
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  const scalar_t* b = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
  const index_t* ptr = indptr.const_data_ptr<index_t>();
  const index_t* idx = indices.const_data_ptr<index_t>();
  const int64_t avg_entries = std::max<int64_t>(1, indices.numel() / std::max<int64_t>(1, rows));
  at::parallel_for(0, rows, grain_for(avg_entries * d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* q_row = q + r * d;
      for (int64_t e = ptr[r]; e < ptr[r + 1]; ++e) {
        const int64_t label = idx[e];
        if (label < 0) {
          pad(e, r);
          continue;
        }
        acc_t s = dot<acc_t>(q_row, w + label * d, d);
        if (b) s += acc_t(b[label]);
        visit(e, r, label, s);
      }
    }
  });
}

}  // namespace

void score_cpu(const Tensor& query, const Tensor& weight, const Tensor& indptr,
               const Tensor& indices, const std::optional<Tensor>& bias, const Tensor& scores) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "score_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "score_cpu", [&] {
      scalar_t* out = scores.data_ptr<scalar_t>();
      for_each_score<scalar_t, index_t>(
          query, weight, indptr, indices, bias,
          [&](int64_t e, int64_t, int64_t, auto s) { out[e] = scalar_t(s); },
          [&](int64_t e, int64_t) { out[e] = scalar_t(0); });
    });
  });
}

void score_keys_cpu(const Tensor& query, const Tensor& weight, const Tensor& indptr,
                    const Tensor& indices, const std::optional<Tensor>& bias, const Tensor& keys) {
  int64_t* out = keys.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "score_keys_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "score_keys_cpu", [&] {
      for_each_score<scalar_t, index_t>(
          query, weight, indptr, indices, bias,
          [&](int64_t e, int64_t, int64_t label, auto s) { out[e] = pack_topk_key(float(s), label); },
          [&](int64_t e, int64_t) { out[e] = kEmptyTopkKey; });
    });
  });
}

void topk_cpu(const Tensor& query, const Tensor& weight, const Tensor& indptr,
              const Tensor& indices, const std::optional<Tensor>& bias, const Tensor& values,
              const Tensor& labels) {
  const int64_t rows = query.size(0), d = query.size(1), k = values.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "topk_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "topk_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      struct Candidate {
        acc_t score;
        int64_t label;
      };
      const auto better = [](const Candidate& a, const Candidate& b) {
        return ranks_before(a.score, a.label, b.score, b.label);
      };
      const scalar_t* q = query.const_data_ptr<scalar_t>();
      const scalar_t* w = weight.const_data_ptr<scalar_t>();
      const scalar_t* b = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
      const index_t* ptr = indptr.const_data_ptr<index_t>();
      const index_t* idx = indices.const_data_ptr<index_t>();
      scalar_t* out_values = values.data_ptr<scalar_t>();
      int64_t* out_labels = labels.data_ptr<int64_t>();
      const int64_t avg_entries = std::max<int64_t>(1, indices.numel() / std::max<int64_t>(1, rows));
      at::parallel_for(0, rows, grain_for(avg_entries * d), [&](int64_t begin, int64_t end) {
        std::vector<Candidate> row;  // one row's entries: memory O(longest row) per thread
        for (int64_t r = begin; r < end; ++r) {
          row.clear();
          for (int64_t e = ptr[r]; e < ptr[r + 1]; ++e) {
            const int64_t label = idx[e];
            if (label < 0) continue;
            acc_t s = dot<acc_t>(q + r * d, w + label * d, d);
            if (b) s += acc_t(b[label]);
            row.push_back({s, label});
          }
          const int64_t kept = std::min<int64_t>(k, row.size());
          std::partial_sort(row.begin(), row.begin() + kept, row.end(), better);
          for (int64_t j = 0; j < k; ++j) {
            out_values[r * k + j] = j < kept ? scalar_t(row[j].score) : -std::numeric_limits<scalar_t>::infinity();
            out_labels[r * k + j] = j < kept ? row[j].label : -1;
          }
        }
      });
    });
  });
}

void backward_query_cpu(const Tensor& grad, const Tensor& weight, const Tensor& indptr,
                        const Tensor& indices, const Tensor& grad_query) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, weight.scalar_type(), "backward_query_cpu", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "backward_query_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const int64_t rows = grad_query.size(0), d = grad_query.size(1);
      const scalar_t* g = grad.const_data_ptr<scalar_t>();
      const scalar_t* w = weight.const_data_ptr<scalar_t>();
      const index_t* ptr = indptr.const_data_ptr<index_t>();
      const index_t* idx = indices.const_data_ptr<index_t>();
      scalar_t* out = grad_query.data_ptr<scalar_t>();
      const int64_t avg_entries = std::max<int64_t>(1, indices.numel() / std::max<int64_t>(1, rows));
      at::parallel_for(0, rows, grain_for(avg_entries * d), [&](int64_t begin, int64_t end) {
        std::vector<acc_t> acc(d);
        for (int64_t r = begin; r < end; ++r) {
          std::fill(acc.begin(), acc.end(), acc_t(0));
          for (int64_t e = ptr[r]; e < ptr[r + 1]; ++e) {
            if (idx[e] >= 0) axpy(acc_t(g[e]), w + int64_t(idx[e]) * d, acc.data(), d);
          }
          for (int64_t j = 0; j < d; ++j) out[r * d + j] = scalar_t(acc[j]);
        }
      });
    });
  });
}

}  // namespace xcops::shortlist
