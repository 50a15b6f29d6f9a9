#pragma once
// The one ranking rule of every xcops top-k (dense_topk, hard_negatives, shortlist_topk, on
// every device): higher score first; NaN above every number (as torch.topk ranks it); -0.0
// ties +0.0; ties, NaNs included, go to the lower label id.
//
// A (float32 score, label) pair packs into one int64 key whose signed order is that rule, so
// a plain integer top-k over keys is exact and deterministic. Empty slots hold kEmptyTopkKey,
// below every real key. Free of torch so CUDA kernels can include it cheaply; the tensor
// versions of pack/unpack are in topk/topk_keys.h.
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define XCOPS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define XCOPS_HOST_DEVICE inline
#endif

namespace xcops {

constexpr int64_t kEmptyTopkKey = INT64_MIN;
// Labels are stored as (kMaxTopkLabels - label) in the low 32 bits, so a label must stay below.
constexpr int64_t kMaxTopkLabels = 0xFFFFFFFFll;
// Every NaN is ranked as this quiet NaN, above +inf (0x7F800000).
constexpr int32_t kCanonicalNanBits = 0x7FC00000;

// True when (a, a_label) ranks before (b, b_label) under the rule above.
template <typename score_t>
XCOPS_HOST_DEVICE bool ranks_before(score_t a, int64_t a_label, score_t b, int64_t b_label) {
  const bool a_nan = a != a, b_nan = b != b;
  if (a_nan || b_nan) return a_nan && (!b_nan || a_label < b_label);
  return a > b || (a == b && a_label < b_label);
}

// A signed integer with the order of the rule: float bits, with the magnitude bits of
// negatives flipped (so -0.0 would be -1: it is mapped to +0.0 first).
XCOPS_HOST_DEVICE int64_t float_rank(float score) {
  int32_t bits;
  if (score != score) {
    bits = kCanonicalNanBits;
  } else {
    if (score == 0.0f) score = 0.0f;  // an FMA on the GPU can give -0 where the CPU gives +0
    memcpy(&bits, &score, sizeof(bits));
  }
  return bits >= 0 ? int64_t(bits) : int64_t(bits ^ 0x7FFFFFFF);
}

XCOPS_HOST_DEVICE int64_t pack_topk_key(float score, int64_t label) {
  // rank * 2^32 stays inside int64; the label part is in [1, 2^32 - 1], so no real key is
  // kEmptyTopkKey.
  return float_rank(score) * (int64_t(1) << 32) + (kMaxTopkLabels - label);
}

}  // namespace xcops
