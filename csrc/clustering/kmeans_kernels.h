#pragma once
// Balanced hierarchical spherical 2-means: what the CPU algorithm (kmeans_cpu.cpp) and the
// GPU algorithm (clustering_ops.cpp, with its kernel in kmeans_cuda.cu) share. Both walk the
// tree level by level with the same conventions, so their results agree wherever
// floating-point rounding does not decide a split:
//  - At every level the points of node k occupy positions [offsets[k], offsets[k+1]) of a
//    permutation, in ascending point id ("canonical order").
//  - A node of n points splits into child 2k (left: the ceil(n/2) points with the lowest
//    (score, point id), score = <c_right - c_left, x>) and child 2k+1 (right: the rest).
//  - The first split of a node starts from the two seed points of seed_positions().
//  - A node stops once its split no longer changes (a fixed point), or after `iters` splits.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace xcops::clustering {

// Node ranges of the next level: [b, e) splits into [b, b + ceil(n/2)) and [b + ceil(n/2), e),
// so sizes at depth D are floor or ceil of N / 2^D.
inline std::vector<int64_t> child_offsets(const std::vector<int64_t>& offsets) {
  std::vector<int64_t> children;
  children.reserve(2 * offsets.size() - 1);
  children.push_back(offsets.front());
  for (size_t k = 0; k + 1 < offsets.size(); ++k) {
    children.push_back(offsets[k] + (offsets[k + 1] - offsets[k] + 1) / 2);
    children.push_back(offsets[k + 1]);
  }
  return children;
}

// splitmix64's finaliser: a bijective, well-mixed hash of 64 bits.
inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct SeedPair {
  int64_t left, right;  // positions within the node's range
};

// Two distinct positions in [0, n), n >= 2. A counter-based hash of (seed, level, node)
// rather than a sequential generator, so the choice is the same on every device and
// independent of the order in which nodes are processed.
inline SeedPair seed_positions(uint64_t seed, int64_t level, int64_t node, int64_t n) {
  const uint64_t h = mix64(mix64(seed) ^ ((uint64_t(level) << 32) | uint64_t(node)));
  const int64_t left = int64_t(h % uint64_t(n));
  const int64_t right = (left + 1 + int64_t(mix64(h) % uint64_t(n - 1))) % n;
  return {left, right};
}

// The whole tree on the CPU, node by node (kmeans_cpu.cpp). xn: [N, d] contiguous float32 or
// float64 rows of unit (or zero) norm; depth >= 1 with 2^depth <= N. Writes assign [N] int64
// (the leaf of each point) and centroids [2^depth, d] (dtype of xn): the normalised mean of
// each leaf.
void balanced_kmeans_cpu(const at::Tensor& xn, int64_t depth, int64_t iters, uint64_t seed,
                         const at::Tensor& assign, const at::Tensor& centroids);

#ifdef XCOPS_WITH_CUDA
// Sort keys of the split: keys[p] = node_of_pos[p] * 2^32 + the order-preserving bits of
// scores[p], so an ascending sort groups positions by node, then by score. Scores are float32
// [N] (float64 scores do not fit beside a node id: they sort in two passes instead);
// node_of_pos and keys are int64 [N]; node ids < 2^31.
void pack_split_keys_cuda(const at::Tensor& scores, const at::Tensor& node_of_pos,
                          const at::Tensor& keys);
#endif

}  // namespace xcops::clustering
