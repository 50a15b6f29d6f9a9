// Exact maximum-inner-product top-k over all labels, streaming over label chunks so the
// [B, L] score matrix never exists: per tile one GEMM into a reused buffer (fp32 or fp64
// output), the bias added, excluded ids masked to -inf, and the tile folded into a running
// per-row top-k (topk_accumulator.h).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/where.h>
#include <torch/library.h>
#include <torch/version.h>

#include <cstdlib>
#include <limits>
#include <vector>

#include "common/checks.h"
#include "common/csr.h"
#include "common/topk_key.h"
#include "topk/fused_topk_cpu.h"
#include "topk/topk_accumulator.h"

namespace xcops::topk {
namespace {

using at::Tensor;

// Memory bound, at any B: a tile of at most tile_elements scores is live at a time. Up to
// tile_elements / kMinChunk rows share one pass over the labels, in chunks of
// tile_elements / rows labels; more rows take several passes. 4M fp32 = 16 MB; the CUDA
// kernel path, which keeps no keys beside the scores, takes 12M (48 MB: 64k-label chunks up
// to B = 192, 12k labels at B = 1024), so a chunk costs few launches.
constexpr int64_t kTileElements = int64_t(1) << 22;
constexpr int64_t kCudaKernelTileElements = int64_t(3) << 22;
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
  Tensor rows;  // row of each excluded id (int64)
  Tensor ids;   // excluded label ids (int64), -1 entries ignored
};

// Sets the scores of the ids excluded for rows [row_begin, row_begin + tile_rows) inside the
// labels [begin, begin + width) to -inf. Other ids write to a trash slot just past the
// [tile_rows, width] scores, so no data-dependent sizes (and no host sync) are needed.
void mask_tile(const Exclusions& ex, Tensor& buffer, int64_t row_begin, int64_t tile_rows,
               int64_t begin, int64_t width) {
  const Tensor inside = (ex.ids >= begin).logical_and_(ex.ids < begin + width)
                            .logical_and_(ex.rows >= row_begin)
                            .logical_and_(ex.rows < row_begin + tile_rows);
  const Tensor flat =
      at::where(inside, (ex.rows - row_begin) * width + (ex.ids - begin), tile_rows * width);
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
  // The ranking keys hold a label id in 32 bits (common/topk_key.h).
  TORCH_CHECK(labels.size(0) < kMaxTopkLabels, op, ": at most ", kMaxTopkLabels - 1, " ",
              labels_name, " rows are supported, got ", labels.size(0));
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
    check_csr_values(exclude_spec, *exclude_indptr, *exclude_indices, labels,
                     /*want_max_row_length=*/false);
  }
  if (rows == 0) {
    return {at::empty({0, k}, query.options()), at::empty({0, k}, query.options().dtype(at::kLong))};
  }

  // XCOPS_GENERIC_TOPK=1 runs the device-generic path on the CPU too, so the tests check the
  // logic the GPU runs on machines without one.
  const bool generic = query.is_cuda() || std::getenv("XCOPS_GENERIC_TOPK") != nullptr;
  if (!generic && query.scalar_type() == at::kFloat && fused_topk_cpu_applies(rows)) {
    Tensor values = at::empty({rows, k}, query.options());
    Tensor indices = at::empty({rows, k}, query.options().dtype(at::kLong));
    const auto as_long = [](const std::optional<Tensor>& t) {
      return t ? std::optional<Tensor>(t->to(at::kLong).contiguous()) : std::nullopt;
    };
    fused_topk_cpu(query, weight, bias, as_long(exclude_indptr), as_long(exclude_indices), values, indices);
    return {values, indices};
  }

  std::optional<Exclusions> exclusions;
  if (exclude_indptr) {
    const Tensor lengths = (exclude_indptr->slice(0, 1) - exclude_indptr->slice(0, 0, rows)).to(at::kLong);
    exclusions = Exclusions{at::repeat_interleave(lengths, std::optional<int64_t>(exclude_indices->numel())),
                            exclude_indices->to(at::kLong)};
  }

  const Tensor lhs = query.is_cuda() ? query : query.to(acc);
  // Only the [L] bias is converted; the [L, d] weight is read in place, chunk by chunk.
  const std::optional<Tensor> bias_acc =
      bias ? std::optional<Tensor>(bias->to(acc)) : std::nullopt;
  const int64_t tile_elements = generic && uses_cuda_topk_kernel(query.options().dtype(acc), k)
                                    ? kCudaKernelTileElements
                                    : kTileElements;
  const int64_t block_rows = std::min(rows, tile_elements / kMinChunk);
  const int64_t chunk = std::min(labels, std::max(kMinChunk, tile_elements / block_rows));
  // One spare element past [block_rows, chunk] takes the masked writes of other exclusions.
  Tensor buffer = at::empty({block_rows * chunk + 1}, query.options().dtype(acc));
  std::vector<Tensor> values, indices;
  for (int64_t row_begin = 0; row_begin < rows; row_begin += block_rows) {
    const int64_t tile_rows = std::min(block_rows, rows - row_begin);
    const Tensor block = lhs.narrow(0, row_begin, tile_rows);
    const auto best = generic ? make_aten_topk_accumulator(tile_rows, k, chunk, buffer.options())
                              : make_cpu_topk_accumulator(tile_rows, k, acc);
    for (int64_t begin = 0; begin < labels; begin += chunk) {
      const int64_t width = std::min(chunk, labels - begin);
      Tensor scores = buffer.narrow(0, 0, tile_rows * width).view({tile_rows, width});
      chunk_scores(block, weight.narrow(0, begin, width), scores);
      // Before the exclusions: an excluded label must stay -inf even with a bias of +inf.
      if (bias_acc) scores.add_(bias_acc->narrow(0, begin, width));
      if (exclusions) mask_tile(*exclusions, buffer, row_begin, tile_rows, begin, width);
      best->add(scores, begin);
    }
    auto [block_values, block_indices] = best->finish();
    values.push_back(block_values.to(query.scalar_type()));
    indices.push_back(block_indices);
  }
  if (values.size() == 1) return {values[0], indices[0]};
  return {at::cat(values), at::cat(indices)};
}

std::tuple<Tensor, Tensor> dense_topk(const Tensor& query, const Tensor& weight, int64_t k,
                                      const std::optional<Tensor>& exclude_indptr,
                                      const std::optional<Tensor>& exclude_indices,
                                      const std::optional<Tensor>& bias) {
  const char* op = "xcops.dense_topk";
  check_query_and_labels(op, "weight", query, weight);
  check_label_bias(op, bias, query, weight);
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
  // At most P columns can be returned; a larger k would only allocate empty [B, k] slots.
  TORCH_CHECK(k <= labels.size(0), op, ": k = ", k, " exceeds the number of label columns P = ",
              labels.size(0), " (labels.size(0))");
  return streaming_topk({op, "positives", "the number of labels P (labels.size(0))"}, query, labels,
                        k, positives_indptr, positives_indices, std::nullopt);
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
