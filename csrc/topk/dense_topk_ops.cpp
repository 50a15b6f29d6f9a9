// Exact maximum-inner-product top-k over all labels, streaming over label chunks so the
// [B, L] score matrix never exists: per chunk one GEMM into a reused [B, chunk] buffer (fp32
// or fp64 output), the bias added, excluded ids masked to -inf, and the chunk folded into a running per-row
// top-k (topk_accumulator.h).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/where.h>
#include <torch/library.h>
#include <torch/version.h>

#include <cstdlib>
#include <limits>

#include "common/checks.h"
#include "common/csr.h"
#include "topk/topk_accumulator.h"

namespace xcops::topk {
namespace {

using at::Tensor;

// Elements of the per-chunk score buffer: 4M fp32 = 16 MB, which stays in a GPU's L2.
constexpr int64_t kChunkElements = int64_t(1) << 22;
constexpr int64_t kMinChunk = 256;

at::ScalarType score_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

// query [B, d] (already in the score dtype on CPU) times chunk [C, d] transposed, written
// into out [B, C] in the score dtype with full-precision accumulation.
void chunk_scores(const Tensor& query, const Tensor& chunk, Tensor& out) {
  const at::ScalarType acc = out.scalar_type();
  if (chunk.scalar_type() == acc) {
    at::mm_out(out, query, chunk.t());
    return;
  }
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
  if (chunk.is_cuda()) {  // cuBLAS reads bf16/fp16 and writes fp32 directly
    at::mm_out(out, query, chunk.t(), acc);
    return;
  }
#endif
  at::mm_out(out, query.to(acc), chunk.to(acc).t());
}

struct Exclusions {
  Tensor flat_rows;  // row of each excluded id, times the chunk width (see mask_chunk)
  Tensor ids;        // excluded label ids (int64), -1 entries ignored
};

// Sets the scores of excluded ids inside [begin, begin + width) to -inf. Ids outside the chunk
// write to a trash slot just past the [B, width] scores, so no data-dependent sizes (and no
// host sync) are needed.
void mask_chunk(const Exclusions& ex, Tensor& buffer, int64_t rows, int64_t begin, int64_t width) {
  const Tensor inside = (ex.ids >= begin).logical_and_(ex.ids < begin + width);
  const Tensor flat = at::where(inside, ex.flat_rows * width + (ex.ids - begin), rows * width);
  buffer.index_fill_(0, flat, -std::numeric_limits<double>::infinity());
}

void check_query_and_labels(const char* op, const char* labels_name, const Tensor& query,
                            const Tensor& labels) {
  check_float_tensor(op, "query", query, 2);
  check_float_tensor(op, labels_name, labels, 2);
  check_same_dtype(op, labels_name, labels, "query", query);
  check_same_device(op, labels_name, labels, "query", query);
  TORCH_CHECK(labels.size(1) == query.size(1), op, ": query has d = ", query.size(1), " but ",
              labels_name, " has d = ", labels.size(1));
}

// The streaming top-k; arguments already checked, 1 <= k <= weight.size(0).
std::tuple<Tensor, Tensor> streaming_topk(const CsrSpec& exclude_spec, const Tensor& query,
                                          const Tensor& weight, int64_t k,
                                          const std::optional<Tensor>& exclude_indptr,
                                          const std::optional<Tensor>& exclude_indices,
                                          const std::optional<Tensor>& bias) {
  const int64_t rows = query.size(0), labels = weight.size(0);
  const at::ScalarType acc = score_dtype(query.scalar_type());
  if (exclude_indptr) {  // checked even for an empty batch: a bad CSR is an error at any size
    check_csr_layout(exclude_spec, *exclude_indptr, *exclude_indices, rows, query);
    check_csr_values(exclude_spec, *exclude_indptr, *exclude_indices, labels);
  }
  if (rows == 0) {
    return {at::empty({0, k}, query.options()), at::empty({0, k}, query.options().dtype(at::kLong))};
  }

  std::optional<Exclusions> exclusions;
  if (exclude_indptr) {
    const Tensor lengths = (exclude_indptr->slice(0, 1) - exclude_indptr->slice(0, 0, rows)).to(at::kLong);
    exclusions = Exclusions{
        at::repeat_interleave(lengths),
        exclude_indices->to(at::kLong)};
  }

  const Tensor lhs = query.is_cuda() ? query : query.to(acc);
  // Only the [L] bias is converted; the [L, d] weight is read in place, chunk by chunk.
  const std::optional<Tensor> bias_acc =
      bias ? std::optional<Tensor>(bias->to(acc)) : std::nullopt;
  const int64_t chunk = std::min(labels, std::max(kMinChunk, kChunkElements / rows));
  // One spare element past [rows, chunk] takes the masked writes of out-of-chunk exclusions.
  Tensor buffer = at::empty({rows * chunk + 1}, query.options().dtype(acc));
  // XCOPS_GENERIC_TOPK=1 runs the device-generic path on the CPU too, so the tests check the
  // logic the GPU runs on machines without one.
  const bool generic = query.is_cuda() || std::getenv("XCOPS_GENERIC_TOPK") != nullptr;
  const auto best = generic ? make_aten_topk_accumulator(rows, k, buffer.options())
                            : make_cpu_topk_accumulator(rows, k, acc);
  for (int64_t begin = 0; begin < labels; begin += chunk) {
    const int64_t width = std::min(chunk, labels - begin);
    Tensor scores = buffer.narrow(0, 0, rows * width).view({rows, width});
    chunk_scores(lhs, weight.narrow(0, begin, width), scores);
    // Before the exclusions: an excluded label must stay -inf even with a bias of +inf.
    if (bias_acc) scores.add_(bias_acc->narrow(0, begin, width));
    if (exclusions) mask_chunk(*exclusions, buffer, rows, begin, width);
    best->add(scores, begin);
  }
  auto [values, indices] = best->finish();
  return {values.to(query.scalar_type()), indices};
}

std::tuple<Tensor, Tensor> dense_topk(const Tensor& query, const Tensor& weight, int64_t k,
                                      const std::optional<Tensor>& exclude_indptr,
                                      const std::optional<Tensor>& exclude_indices,
                                      const std::optional<Tensor>& bias) {
  const char* op = "xcops.dense_topk";
  check_query_and_labels(op, "weight", query, weight);
  if (bias) {
    check_float_tensor(op, "bias", *bias, 1);
    check_same_dtype(op, "bias", *bias, "query", query);
    check_same_device(op, "bias", *bias, "query", query);
    TORCH_CHECK(bias->numel() == weight.size(0), op, ": bias must have L = ", weight.size(0),
                " entries (weight.size(0)), got ", bias->numel());
  }
  TORCH_CHECK(k >= 1, op, ": k must be >= 1, got ", k);
  TORCH_CHECK(k <= weight.size(0), op, ": k = ", k, " exceeds the number of labels L = ",
              weight.size(0), " (weight.size(0))");
  TORCH_CHECK(exclude_indptr.has_value() == exclude_indices.has_value(), op,
              ": pass both exclude_indptr and exclude_indices, or neither");
  return streaming_topk({op, "exclude", "the number of labels L (weight.size(0))"}, query, weight,
                        k, exclude_indptr, exclude_indices, bias);
}

std::tuple<Tensor, Tensor> hard_negatives(const Tensor& query, const Tensor& labels,
                                          const Tensor& positives_indptr,
                                          const Tensor& positives_indices, int64_t k) {
  const char* op = "xcops.hard_negatives";
  check_query_and_labels(op, "labels", query, labels);
  TORCH_CHECK(k >= 1, op, ": k must be >= 1, got ", k);
  TORCH_CHECK(labels.size(0) >= 1, op, ": labels must have at least one row, got shape ",
              shape_str(labels));
  // Fewer label columns than k: search them all and leave the extra slots empty.
  const int64_t searched = std::min(k, labels.size(0));
  auto [scores, negatives] =
      streaming_topk({op, "positives", "the number of labels P (labels.size(0))"}, query, labels,
                     searched, positives_indptr, positives_indices, std::nullopt);
  if (searched == k) return {scores, negatives};
  const int64_t rows = query.size(0);
  return {at::cat({scores, at::full({rows, k - searched}, -std::numeric_limits<double>::infinity(),
                                    scores.options())}, 1),
          at::cat({negatives, at::full({rows, k - searched}, -1, negatives.options())}, 1)};
}

}  // namespace
TORCH_LIBRARY_IMPL(xcops, CPU, m) {
  m.impl("dense_topk", &dense_topk);
  m.impl("hard_negatives", &hard_negatives);
}

#ifdef XCOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(xcops, CUDA, m) {
  m.impl("dense_topk", &dense_topk);
  m.impl("hard_negatives", &hard_negatives);
}
#endif

}  // namespace xcops::topk
