// The shortlist ops: argument checks, output allocation and the device-independent steps
// (sorting for the weight gradient, integer top-k over packed keys). The arithmetic is in
// shortlist_cpu.cpp / shortlist_cuda.cu.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/unique_consecutive.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "common/checks.h"
#include "common/csr.h"
#include "common/segment_sum.h"
#include "common/topk_key.h"
#include "shortlist/shortlist_kernels.h"
#include "topk/topk_keys.h"

namespace xcops::shortlist {
namespace {

using at::Tensor;

#ifdef XCOPS_WITH_CUDA
#define XCOPS_ON_DEVICE(tensor, kernel, ...) \
  ((tensor).is_cuda() ? kernel##_cuda(__VA_ARGS__) : kernel##_cpu(__VA_ARGS__))
#else
#define XCOPS_ON_DEVICE(tensor, kernel, ...) kernel##_cpu(__VA_ARGS__)
#endif

constexpr CsrSpec shortlist_spec(const char* op) {
  return {op, "shortlist", "the number of labels L (weight.size(0))"};
}

CsrFacts check_score_args(const char* op, const Tensor& query, const Tensor& weight,
                          const Tensor& indptr, const Tensor& indices,
                          const std::optional<Tensor>& bias,
                          bool want_max_row_length = true) {
  check_float_tensor(op, "query", query, 2);
  check_float_tensor(op, "weight", weight, 2);
  check_same_dtype(op, "weight", weight, "query", query);
  check_same_device(op, "weight", weight, "query", query);
  TORCH_CHECK(weight.size(1) == query.size(1), op, ": query has d = ", query.size(1),
              " but weight has d = ", weight.size(1), " (query is ", shape_str(query),
              ", weight is ", shape_str(weight), ")");
  check_label_bias(op, bias, query, weight);
  check_csr_layout(shortlist_spec(op), indptr, indices, query.size(0), query);
  return check_csr_values(shortlist_spec(op), indptr, indices, weight.size(0), want_max_row_length);
}

void check_grad(const char* op, const Tensor& grad, const Tensor& indices, const Tensor& like) {
  check_float_tensor(op, "grad_scores", grad, 1);
  check_same_dtype(op, "grad_scores", grad, "the inputs", like);
  check_same_device(op, "grad_scores", grad, "the inputs", like);
  TORCH_CHECK(grad.numel() == indices.numel(), op, ": grad_scores must have one entry per index (",
              indices.numel(), "), got ", grad.numel());
}

Tensor shortlist_score(const Tensor& query, const Tensor& weight, const Tensor& indptr,
                       const Tensor& indices, const std::optional<Tensor>& bias,
                       bool /*sparse_grad: only shapes the backward*/) {
  check_score_args("xcops.shortlist_score", query, weight, indptr, indices, bias,
                   /*want_max_row_length=*/false);
  Tensor scores = at::empty({indices.numel()}, query.options());
  if (indices.numel() > 0) {
    XCOPS_ON_DEVICE(query, score, query, weight, indptr, indices, bias, scores);
  }
  return scores;
}

// The first k entries of every row of a CSR whose entries are already sorted best first
// within each row (positions start[b] + j), as (taken [B, k] bool, positions [B, k]).
std::tuple<Tensor, Tensor> row_heads(const Tensor& indptr, int64_t nnz, int64_t k) {
  const int64_t rows = indptr.numel() - 1;
  const Tensor starts = indptr.slice(0, 0, rows).to(at::kLong).unsqueeze(1);
  const Tensor lengths = indptr.slice(0, 1).to(at::kLong).unsqueeze(1) - starts;
  const Tensor slot = at::arange(k, starts.options()).unsqueeze(0);
  return {slot < lengths, (starts + slot).clamp_max_(std::max<int64_t>(nnz - 1, 0))};
}

// The ATen (any device) shortlist top-k, in O(nnz + B * k) memory at any row lengths: the
// entries are sorted best first, then stably by row, which leaves each row's entries best
// first inside its own CSR range. Float32 accumulation ranks packed keys; float64 ranks its
// float64 scores by stable sorts: label, then score, then (row, padding last).
std::tuple<Tensor, Tensor> generic_topk(const Tensor& query, const Tensor& weight,
                                        const Tensor& indptr, const Tensor& indices, int64_t k,
                                        const std::optional<Tensor>& bias, int64_t max_row_length) {
  const int64_t rows = query.size(0), nnz = indices.numel();
  const auto long_options = indptr.options().dtype(at::kLong);
  auto [taken, positions] = row_heads(indptr, nnz, k);
  const Tensor lengths = (indptr.slice(0, 1) - indptr.slice(0, 0, rows)).to(at::kLong);
  const Tensor entry_rows = at::repeat_interleave(lengths, std::optional<int64_t>(nnz));
  if (query.scalar_type() != at::kDouble) {
    Tensor keys = at::empty({nnz}, long_options);
    if (nnz > 0) XCOPS_ON_DEVICE(query, score_keys, query, weight, indptr, indices, bias, keys);
    Tensor top;
    if (nnz > 0 && rows * max_row_length == nnz) {  // every row equally long: a [B, K] grid
      const int64_t kept = std::min(k, max_row_length);
      top = std::get<0>(at::topk(keys.view({rows, max_row_length}), kept, 1, true, true));
      top = at::cat({top, at::full({rows, k - kept}, kEmptyTopkKey, long_options)}, 1);
    } else {
      auto [sorted, order] = keys.sort(/*stable=*/false, 0, /*descending=*/true);
      const Tensor by_row = std::get<1>(entry_rows.index_select(0, order).sort(/*stable=*/true, 0, false));
      const Tensor grouped = sorted.index_select(0, by_row);
      top = nnz > 0 ? grouped.index_select(0, positions.flatten()).view({rows, k}) : positions;
      top = top.masked_fill(taken.logical_not(), kEmptyTopkKey);
    }
    return topk::unpack_topk_keys(top, query.scalar_type());
  }
  const Tensor scores = shortlist_score(query, weight, indptr, indices, bias, false);
  const Tensor labels = indices.to(at::kLong);
  Tensor order = std::get<1>(labels.sort(/*stable=*/true, 0, false));
  order = order.index_select(0, std::get<1>(scores.index_select(0, order).sort(true, 0, true)));
  const Tensor row_then_padding = entry_rows * 2 + (labels < 0);
  order = order.index_select(0, std::get<1>(row_then_padding.index_select(0, order).sort(true, 0, false)));
  if (nnz == 0) {
    return {at::full({rows, k}, -std::numeric_limits<double>::infinity(), query.options()),
            at::full({rows, k}, -1, long_options)};
  }
  const Tensor picked = order.index_select(0, positions.flatten()).view({rows, k});
  const Tensor keep = taken.logical_and(labels.index_select(0, picked.flatten()).view({rows, k}) >= 0);
  return {scores.index_select(0, picked.flatten()).view({rows, k})
              .masked_fill(keep.logical_not(), -std::numeric_limits<double>::infinity()),
          labels.index_select(0, picked.flatten()).view({rows, k}).masked_fill(keep.logical_not(), -1)};
}

std::tuple<Tensor, Tensor> shortlist_topk(const Tensor& query, const Tensor& weight,
                                          const Tensor& indptr, const Tensor& indices, int64_t k,
                                          const std::optional<Tensor>& bias) {
  const char* op = "xcops.shortlist_topk";
  const CsrFacts facts = check_score_args(op, query, weight, indptr, indices, bias);
  TORCH_CHECK(k >= 1, op, ": k must be >= 1, got ", k);
  // More slots than labels and than the longest row could only ever be empty; the bound also
  // keeps a huge k from allocating [B, k] outputs until the process is killed (an empty
  // batch allocates nothing, and its padded width is not known here).
  TORCH_CHECK(query.size(0) == 0 || k <= std::max(weight.size(0), facts.max_row_length), op, ": k = ", k,
              " exceeds both the number of labels L = ", weight.size(0),
              " and the longest shortlist row (", facts.max_row_length, ")");
  TORCH_CHECK(weight.size(0) < kMaxTopkLabels, op, ": at most ", kMaxTopkLabels - 1,
              " labels are supported, got L = ", weight.size(0));
  // XCOPS_GENERIC_TOPK=1 runs the device-generic path on the CPU too, so the tests check the
  // logic the GPU runs on machines without one.
  if (query.is_cuda() || std::getenv("XCOPS_GENERIC_TOPK") != nullptr) {
    return generic_topk(query, weight, indptr, indices, k, bias, facts.max_row_length);
  }
  Tensor values = at::empty({query.size(0), k}, query.options());
  Tensor labels = at::empty({query.size(0), k}, query.options().dtype(at::kLong));
  topk_cpu(query, weight, indptr, indices, bias, values, labels);
  return {values, labels};
}

Tensor shortlist_score_backward_query(const Tensor& grad, const Tensor& weight,
                                      const Tensor& indptr, const Tensor& indices) {
  const char* op = "xcops.shortlist_score_backward_query";
  check_float_tensor(op, "weight", weight, 2);
  check_grad(op, grad, indices, weight);
  check_csr_layout(shortlist_spec(op), indptr, indices, indptr.numel() - 1, weight);
  check_csr_values(shortlist_spec(op), indptr, indices, weight.size(0),
                   /*want_max_row_length=*/false);
  Tensor grad_query = at::empty({indptr.numel() - 1, weight.size(1)}, weight.options());
  if (grad_query.numel() > 0) {
    XCOPS_ON_DEVICE(weight, backward_query, grad, weight, indptr, indices, grad_query);
  }
  return grad_query;
}

// The entries sorted by label, stably: each label's entries keep their original order, so
// its gradient is summed in the same order on every run (and -1 padding sorts first).
std::tuple<Tensor, Tensor> sort_by_label(const Tensor& indices) {
  auto [sorted_labels, order] = at::sort(indices, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  return {sorted_labels.contiguous(), order.contiguous()};
}

void check_weight_grad_args(const char* op, const Tensor& grad, const Tensor& query,
                            const Tensor& indptr, const Tensor& indices, int64_t num_ids) {
  check_float_tensor(op, "query", query, 2);
  check_grad(op, grad, indices, query);
  check_csr_layout(shortlist_spec(op), indptr, indices, query.size(0), query);
  check_csr_values(shortlist_spec(op), indptr, indices, num_ids, /*want_max_row_length=*/false);
}

// The compact gradient on the CPU: the run offsets come from unique_consecutive, then one
// ordered segmented sum.
std::tuple<Tensor, Tensor, Tensor> compact_weight_grad_cpu(const Tensor& grad, const Tensor& query,
                                                           const Tensor& indptr,
                                                           const Tensor& indices) {
  auto [sorted_labels, order] = sort_by_label(indices);
  auto [labels, inverse, counts] = at::unique_consecutive(sorted_labels, false, true);
  Tensor offsets = at::cat({at::zeros({1}, counts.options()), at::cumsum(counts, 0)});
  if (labels.numel() > 0 && labels[0].item<int64_t>() < 0) {  // padding sorts first
    labels = labels.slice(0, 1);
    offsets = offsets.slice(0, 1);
  }
  labels = labels.to(at::kLong);
  const Tensor rows =
      at::searchsorted(indptr, order.to(indptr.scalar_type()), /*out_int32=*/false, /*right=*/true) - 1;
  Tensor grad_rows = at::empty({labels.numel(), query.size(1)}, query.options());
  Tensor grad_bias = at::empty({labels.numel()}, query.options());
  if (labels.numel() > 0) {
    segment_row_sum(grad, order, query, rows, offsets.contiguous(), grad_rows, grad_bias);
  }
  return {labels, grad_rows, grad_bias};
}

#ifdef XCOPS_WITH_CUDA
// The compact gradient on CUDA: each run's output slot is the running count of run heads,
// all on the device; the one host sync is the number of unique labels, the size of the result.
std::tuple<Tensor, Tensor, Tensor> compact_weight_grad_cuda(const Tensor& grad, const Tensor& query,
                                                            const Tensor& indptr,
                                                            const Tensor& indices) {
  auto [sorted_labels, order] = sort_by_label(indices);
  const int64_t nnz = sorted_labels.numel();
  Tensor heads = sorted_labels >= 0;
  if (nnz > 1) {
    heads.slice(0, 1).logical_and_(sorted_labels.slice(0, 1) != sorted_labels.slice(0, 0, nnz - 1));
  }
  const Tensor run_dest = heads.cumsum(0) - 1;  // int64
  const int64_t unique = nnz > 0 ? run_dest[nnz - 1].item<int64_t>() + 1 : 0;
  Tensor labels = at::empty({unique}, query.options().dtype(at::kLong));
  Tensor grad_rows = at::empty({unique, query.size(1)}, query.options());
  Tensor grad_bias = at::empty({unique}, query.options());
  if (unique > 0) {
    backward_weight_cuda(grad, query, indptr, sorted_labels, order, run_dest, grad_rows, grad_bias,
                         labels);
  }
  return {labels, grad_rows, grad_bias};
}
#endif

std::tuple<Tensor, Tensor, Tensor> shortlist_score_backward_weight(const Tensor& grad,
                                                                   const Tensor& query,
                                                                   const Tensor& indptr,
                                                                   const Tensor& indices) {
  check_weight_grad_args("xcops.shortlist_score_backward_weight", grad, query, indptr, indices,
                         std::numeric_limits<int64_t>::max());
  return XCOPS_ON_DEVICE(query, compact_weight_grad, grad, query, indptr, indices);
}

std::tuple<Tensor, Tensor> shortlist_score_backward_weight_dense(const Tensor& grad,
                                                                 const Tensor& query,
                                                                 const Tensor& indptr,
                                                                 const Tensor& indices,
                                                                 int64_t num_labels) {
  const char* op = "xcops.shortlist_score_backward_weight_dense";
  TORCH_CHECK(num_labels >= 0, op, ": num_labels must be >= 0, got ", num_labels);
  // The ids address rows of the output: an id >= num_labels would be a wild write.
  check_weight_grad_args(op, grad, query, indptr, indices, num_labels);
  Tensor grad_weight = at::zeros({num_labels, query.size(1)}, query.options());
  Tensor grad_bias = at::zeros({num_labels}, query.options());
#ifdef XCOPS_WITH_CUDA
  if (query.is_cuda()) {
    // Each label's run writes its own output row: no compaction, so no sync.
    auto [sorted_labels, order] = sort_by_label(indices);
    backward_weight_cuda(grad, query, indptr, sorted_labels, order, std::nullopt, grad_weight,
                         grad_bias, std::nullopt);
    return {grad_weight, grad_bias};
  }
#endif
  auto [labels, rows, bias] = compact_weight_grad_cpu(grad, query, indptr, indices);
  // Each label appears once in `labels`, so the copy is deterministic.
  grad_weight.index_copy_(0, labels, rows);
  grad_bias.index_copy_(0, labels, bias);
  return {grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(xcops, CPU, m) {
  m.impl("shortlist_score", &shortlist_score);
  m.impl("shortlist_topk", &shortlist_topk);
  m.impl("shortlist_score_backward_query", &shortlist_score_backward_query);
  m.impl("shortlist_score_backward_weight", &shortlist_score_backward_weight);
  m.impl("shortlist_score_backward_weight_dense", &shortlist_score_backward_weight_dense);
}

#ifdef XCOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(xcops, CUDA, m) {
  m.impl("shortlist_score", &shortlist_score);
  m.impl("shortlist_topk", &shortlist_topk);
  m.impl("shortlist_score_backward_query", &shortlist_score_backward_query);
  m.impl("shortlist_score_backward_weight", &shortlist_score_backward_weight);
  m.impl("shortlist_score_backward_weight_dense", &shortlist_score_backward_weight_dense);
}
#endif

}  // namespace xcops::shortlist
