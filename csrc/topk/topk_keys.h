#pragma once
// Tensor versions of the packed top-k keys of common/topk_key.h, from ATen ops, so they run
// on any device.
#include <ATen/core/Tensor.h>

#include <tuple>

namespace xcops::topk {

// keys[r, j] = pack_topk_key(scores[r, j], begin + j) for float32 scores [R, W] and an int64
// [R, W] view `keys` (it may be strided). Rewrites -0.0 to +0.0 and every NaN to one NaN in
// `scores`, as pack_topk_key does.
void pack_topk_keys(const at::Tensor& scores, const at::Tensor& keys, int64_t begin);

// (values in value_dtype, label ids int64) of packed keys; empty keys give (-inf, -1).
std::tuple<at::Tensor, at::Tensor> unpack_topk_keys(const at::Tensor& keys,
                                                    at::ScalarType value_dtype);

}  // namespace xcops::topk
