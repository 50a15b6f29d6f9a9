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
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/unique_consecutive.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>

#include "common/checks.h"
#include "common/csr.h"
#include "common/segment_sum.h"
#include "common/topk_key.h"
#include "shortlist/shortlist_kernels.h"

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
  if (bias) {
    check_float_tensor(op, "bias", *bias, 1);
    check_same_dtype(op, "bias", *bias, "query", query);
    check_same_device(op, "bias", *bias, "query", query);
    TORCH_CHECK(bias->numel() == weight.size(0), op, ": bias must have L = ", weight.size(0),
                " entries (weight.size(0)), got ", bias->numel());
  }
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

// Inverse of pack_topk_key, in tensor arithmetic so it runs on any device.
std::tuple<Tensor, Tensor> unpack_topk_keys(const Tensor& keys, at::ScalarType value_dtype) {
  const Tensor unsigned_key = keys.bitwise_xor(std::numeric_limits<int64_t>::min());
  const Tensor ordered = unsigned_key.bitwise_right_shift(32).bitwise_and(0xFFFFFFFFll);
  const Tensor label = 0xFFFFFFFFll - unsigned_key.bitwise_and(0xFFFFFFFFll);
  constexpr int64_t kSignBit = 0x80000000ll;
  // Float bits as an int32 value: non-negative floats had their sign bit set, negative ones
  // were bit-flipped; both land inside the int32 range without wrapping.
  const Tensor bits = at::where(ordered >= kSignBit, ordered - kSignBit, -1 - ordered);
  Tensor values = bits.to(at::kInt).view(at::kFloat);
  const Tensor empty = keys == kEmptyTopkKey;
  values = values.masked_fill(empty, -std::numeric_limits<float>::infinity()).to(value_dtype);
  return {values, label.masked_fill(empty, -1)};
}

std::tuple<Tensor, Tensor> shortlist_topk(const Tensor& query, const Tensor& weight,
                                          const Tensor& indptr, const Tensor& indices, int64_t k,
                                          const std::optional<Tensor>& bias) {
  const char* op = "xcops.shortlist_topk";
  const CsrFacts facts = check_score_args(op, query, weight, indptr, indices, bias);
  TORCH_CHECK(k >= 1, op, ": k must be >= 1, got ", k);
  TORCH_CHECK(weight.size(0) < kMaxTopkLabels, op, ": at most ", kMaxTopkLabels - 1,
              " labels are supported, got L = ", weight.size(0));
  const int64_t rows = query.size(0);
  const int64_t width = facts.max_row_length;
  Tensor keys = at::full({rows, width}, kEmptyTopkKey, indptr.options().dtype(at::kLong));
  if (indices.numel() > 0) {
    XCOPS_ON_DEVICE(query, score_keys, query, weight, indptr, indices, bias, keys);
  }
  const int64_t kept = std::min(k, width);
  Tensor top = kept > 0 ? std::get<0>(at::topk(keys, kept, /*dim=*/1, /*largest=*/true,
                                               /*sorted=*/true))
                        : keys.narrow(1, 0, 0);
  if (kept < k) {
    // Fewer candidates than k: the remaining slots are empty.
    top = at::cat({top, at::full({rows, k - kept}, kEmptyTopkKey, keys.options())}, 1);
  }
  auto [values, labels] = unpack_topk_keys(top, query.scalar_type());
  if (query.scalar_type() == at::kDouble) {
    // Keys rank by float32-rounded scores; float64 callers get their values at full precision.
    const Tensor top_indptr = at::arange(rows + 1, labels.options()) * k;
    values = shortlist_score(query, weight, top_indptr, labels.reshape(-1), bias, false)
                 .view({rows, k})
                 .masked_fill(labels < 0, -std::numeric_limits<double>::infinity());
  }
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
