#include "topk/topk_keys.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/where.h>

#include <cstring>
#include <limits>

#include "common/topk_key.h"

namespace xcops::topk {

void pack_topk_keys(const at::Tensor& scores, const at::Tensor& keys, int64_t begin) {
  float nan;
  std::memcpy(&nan, &kCanonicalNanBits, sizeof(nan));
  scores.masked_fill_(scores == 0, 0.0).masked_fill_(scores.isnan(), nan);
  keys.copy_(scores.view(at::kInt));  // sign-extends the float bits
  // float_rank: flip the magnitude bits of negatives (their int64 is negative, >> 63 is -1).
  keys.bitwise_xor_(keys.bitwise_right_shift(63).bitwise_and_(0x7FFFFFFF));
  const at::Tensor label_part =
      at::arange(scores.size(1), keys.options()).neg_().add_(kMaxTopkLabels - begin);
  keys.mul_(int64_t(1) << 32).add_(label_part);
}

std::tuple<at::Tensor, at::Tensor> unpack_topk_keys(const at::Tensor& keys,
                                                    at::ScalarType value_dtype) {
  const at::Tensor rank = keys.bitwise_right_shift(32);  // arithmetic shift: floor(key / 2^32)
  const at::Tensor label = kMaxTopkLabels - keys.bitwise_and(0xFFFFFFFFll);
  // Inverse of float_rank; both branches are inside the int32 range.
  const at::Tensor bits = at::where(rank >= 0, rank, rank.bitwise_xor(0x7FFFFFFF));
  const at::Tensor empty = keys == kEmptyTopkKey;
  at::Tensor values = bits.to(at::kInt).view(at::kFloat);
  values = values.masked_fill(empty, -std::numeric_limits<float>::infinity()).to(value_dtype);
  return {values, label.masked_fill(empty, -1)};
}

}  // namespace xcops::topk
