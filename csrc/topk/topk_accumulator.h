#pragma once
// Running per-row top-k over score chunks, for the streaming top-k ops. Chunks arrive in
// increasing label order as [rows, width] score tensors (float32, or float64 for float64
// inputs) of the label ids [begin, begin + width); an accumulator may overwrite them. Scores
// of -inf (excluded labels) are never kept. Ranking as in common/topk_key.h: NaN first, ties
// to the lower label id, identical on every accumulator.
#include <ATen/core/Tensor.h>

#include <memory>
#include <tuple>

namespace xcops::topk {

class TopkAccumulator {
 public:
  virtual ~TopkAccumulator() = default;
  virtual void add(const at::Tensor& scores, int64_t begin) = 0;
  // (values [rows, k] best first, -inf where empty; label ids [rows, k] int64, -1 where empty)
  virtual std::tuple<at::Tensor, at::Tensor> finish() = 0;
};

// CPU: per-row candidate buffers behind a running threshold, multithreaded over rows.
std::unique_ptr<TopkAccumulator> make_cpu_topk_accumulator(int64_t rows, int64_t k,
                                                           at::ScalarType score_dtype);

// Any device, from ATen ops: one top-k per chunk over the chunk and the running result.
// Chunks are at most max_width wide.
std::unique_ptr<TopkAccumulator> make_aten_topk_accumulator(int64_t rows, int64_t k,
                                                            int64_t max_width,
                                                            const at::TensorOptions& score_options);

// Whether make_aten_topk_accumulator folds chunks with the CUDA kernel, which needs no
// [rows, k + chunk] keys next to the scores (so its tiles may be larger).
bool uses_cuda_topk_kernel(const at::TensorOptions& score_options, int64_t k);

}  // namespace xcops::topk
