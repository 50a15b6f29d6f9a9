#pragma once
// Float32 dense top-k fused into a GEMM micro-kernel (x86-64 with AVX-512F): no score buffer.
#include <ATen/core/Tensor.h>

#include <optional>

namespace xcops::topk {

// Whether fused_topk_cpu can run here: an AVX-512F CPU, and enough rows to give every thread
// whole 32-row groups (fewer rows leave the GEMM's own threading ahead).
bool fused_topk_cpu_applies(int64_t rows);

// values/ids [B, k] (float32, int64) = the top-k of query [B, d] @ weight [L, d].T (+ bias [L]),
// all float32 and contiguous, 1 <= k <= L, ranked as common/topk_key.h. The optional CSR
// (exclude_indptr [B + 1], exclude_indices), int64 and checked, lists ids never returned.
void fused_topk_cpu(const at::Tensor& query, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& exclude_indptr,
                    const std::optional<at::Tensor>& exclude_indices, at::Tensor& values, at::Tensor& ids);

}  // namespace xcops::topk
