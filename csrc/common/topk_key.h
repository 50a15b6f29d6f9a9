#pragma once
// A (score, label) pair packed into one int64 whose signed order is "higher score first, then
// lower label id": a plain integer top-k over these keys is then an exact, deterministic
// top-k with ties broken by the lower label id. Empty slots hold kEmptyTopkKey, below every
// real key. Free of torch so CUDA kernels can include it cheaply.
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define XCOPS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define XCOPS_HOST_DEVICE inline
#endif

namespace xcops {

constexpr int64_t kEmptyTopkKey = INT64_MIN;
// Labels are stored as (2^32 - 1 - label), so a label must stay below this.
constexpr int64_t kMaxTopkLabels = 0xFFFFFFFFll;

XCOPS_HOST_DEVICE int64_t pack_topk_key(float score, int64_t label) {
  // -0.0 and +0.0 must tie (an FMA on the GPU can give -0 where the CPU gives +0).
  if (score == 0.0f) score = 0.0f;
  uint32_t bits;
  memcpy(&bits, &score, sizeof(bits));
  // Unsigned order of `ordered` equals float order: flip all bits of negatives, set the sign
  // bit of non-negatives. NaN, whatever its sign bit, ranks below -inf (and above empty slots)
  // on every device.
  const uint32_t ordered =
      score != score ? 0u : ((bits & 0x80000000u) ? ~bits : (bits | 0x80000000u));
  const uint64_t key = (uint64_t(ordered) << 32) | uint64_t(0xFFFFFFFFu - uint32_t(label));
  return int64_t(key ^ 0x8000000000000000ull);  // unsigned order -> signed order
}

}  // namespace xcops
