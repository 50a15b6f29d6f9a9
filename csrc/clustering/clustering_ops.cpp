// The balanced_kmeans op: argument checks, the working copy of unit-norm rows, and the
// GPU algorithm, which is host code composing device kernels: every node of a level splits
// together (one scoring kernel, one stable sort of (node, score) keys, one segmented sum per
// iteration) with a C++ loop over levels and iterations only. The CPU builds the tree node
// by node instead (kmeans_cpu.cpp).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/repeat_interleave.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>
#ifdef XCOPS_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <vector>

#include "clustering/kmeans_kernels.h"
#include "common/checks.h"
#include "common/segment_sum.h"
#include "shortlist/shortlist_kernels.h"

namespace xcops::clustering {
namespace {

using at::Tensor;

// Rows scaled to unit norm; zero rows stay zero.
Tensor unit_rows(const Tensor& t) {
  return t / at::linalg_vector_norm(t, 2, {1}, /*keepdim=*/true, std::nullopt).clamp_min(1e-12);
}

// x as unit rows in the accumulation precision (float64 stays float64; zero rows stay zero),
// checking on the way that x is finite. Each row is first divided by its largest magnitude:
// the squares of a row of tiny values (norm < 1e-12, or subnormal) would underflow and those
// of huge ones overflow, and either would make the clusters depend on the scale of x.
Tensor checked_unit_rows(const char* op, const Tensor& x) {
  const Tensor xw = x.to(x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const Tensor peak = xw.abs().amax(1, /*keepdim=*/true);  // NaN and Inf propagate
  if (!at::isfinite(peak).all().item<bool>()) {
    const int64_t row = at::isfinite(peak).logical_not().nonzero()[0][0].item<int64_t>();
    TORCH_CHECK(false, op, ": x must be finite, but row ", row, " contains NaN or Inf");
  }
  const Tensor scaled = xw / at::where(peak > 0, peak, at::ones_like(peak));
  const Tensor norms = at::linalg_vector_norm(scaled, 2, {1}, /*keepdim=*/true, std::nullopt);
  return scaled / at::where(norms > 0, norms, at::ones_like(norms));
}

#ifdef XCOPS_WITH_CUDA

Tensor to_device(const std::vector<int64_t>& values, const at::TensorOptions& options) {
  return at::from_blob(const_cast<int64_t*>(values.data()), {int64_t(values.size())}, at::kLong)
      .to(options.device(), /*non_blocking=*/false, /*copy=*/true);
}

// [N] int64: the node owning each position.
Tensor node_of_position(const std::vector<int64_t>& offsets, const at::TensorOptions& options) {
  std::vector<int64_t> sizes(offsets.size() - 1);
  for (size_t k = 0; k < sizes.size(); ++k) sizes[k] = offsets[k + 1] - offsets[k];
  // The optional matters: a plain int64_t would select the (self, repeats) overload.
  return at::repeat_interleave(to_device(sizes, options), std::optional<int64_t>(offsets.back()));
}

// Sums of the rows of each segment of positions, in two deterministic stages: first over
// chunks of at most kChunkRows positions, then over each segment's chunks. The segmented sum
// gives one block to a segment; alone it would leave the GPU idle on the few huge nodes of
// the top levels.
class ChunkedRowSum {
 public:
  static constexpr int64_t kChunkRows = 256;

  ChunkedRowSum(const std::vector<int64_t>& segment_offsets, const Tensor& xn)
      : segments_(int64_t(segment_offsets.size()) - 1) {
    std::vector<int64_t> chunk_offsets = {segment_offsets.front()}, groups = {0};
    for (int64_t s = 0; s < segments_; ++s) {
      for (int64_t p = segment_offsets[s]; p < segment_offsets[s + 1]; p += kChunkRows) {
        chunk_offsets.push_back(std::min(p + kChunkRows, segment_offsets[s + 1]));
      }
      groups.push_back(int64_t(chunk_offsets.size()) - 1);
    }
    chunks_ = int64_t(chunk_offsets.size()) - 1;
    const auto long_options = xn.options().dtype(at::kLong);
    chunk_offsets_ = to_device(chunk_offsets, long_options);
    groups_ = to_device(groups, long_options);
    chunk_ids_ = at::arange(chunks_, long_options);
    ones_ = at::ones({1}, xn.options());
    zeros_ = at::zeros({xn.size(0)}, long_options);  // coefficient index: every row weighs 1
  }

  // [segments, d]: row s sums xn[points[p]] over the positions p of segment s.
  Tensor operator()(const Tensor& xn, const Tensor& points) const {
    Tensor partial = at::empty({chunks_, xn.size(1)}, xn.options());
    Tensor counts = at::empty({chunks_}, xn.options());
    segment_row_sum(ones_, zeros_, xn, points, chunk_offsets_, partial, counts);
    if (chunks_ == segments_) return partial;
    Tensor sums = at::empty({segments_, xn.size(1)}, xn.options());
    segment_row_sum(ones_, zeros_, partial, chunk_ids_, groups_, sums, counts.narrow(0, 0, segments_));
    return sums;
  }

 private:
  int64_t segments_, chunks_;
  Tensor chunk_offsets_, groups_, chunk_ids_, ones_, zeros_;
};

// Positions of one level: node k owns [offsets[k], offsets[k+1]) of the canonical order, and
// after a split the sorted order puts its left child in front of its right child.
struct Level {
  Level(const std::vector<int64_t>& offsets, const Tensor& xn)
      : offsets(offsets), children(child_offsets(offsets)), sums(children, xn) {
    const auto long_options = xn.options().dtype(at::kLong);
    offsets_device = to_device(offsets, long_options);
    node_of_pos = node_of_position(offsets, long_options);
    right_of_pos = at::arange(xn.size(0), long_options) >=
                   to_device(children, long_options).index_select(0, node_of_pos * 2 + 1);
  }

  std::vector<int64_t> offsets, children;
  ChunkedRowSum sums;
  Tensor offsets_device, node_of_pos, right_of_pos;
};

// The order that sorts the positions of a level by (node, score), ties in canonical order.
Tensor split_order(const Tensor& scores, const Level& level) {
  if (scores.scalar_type() == at::kDouble) {
    // 64 bits cannot hold a node id and a float64 score: stable-sort by score, then stably
    // by node. Adding +0 turns -0 into +0, which must tie with it as on the CPU.
    const Tensor by_score = std::get<1>(at::sort(scores + 0.0, /*stable=*/true, 0, false));
    const Tensor nodes = level.node_of_pos.index_select(0, by_score);
    return by_score.index_select(0, std::get<1>(at::sort(nodes, /*stable=*/true, 0, false)));
  }
  Tensor keys = at::empty(scores.sizes(), level.node_of_pos.options());
  pack_split_keys_cuda(scores, level.node_of_pos, keys);
  // Stable: equal scores keep canonical (point id) order, as on the CPU.
  return std::get<1>(at::sort(keys, /*stable=*/true, 0, /*descending=*/false));
}

// Whether each iteration's split changed, read by the host one iteration late: the flag of
// iteration t is copied to pinned memory behind t's kernels and read once t + 1 is queued,
// so the GPU never idles waiting for the host. A fixed point repeats itself, so the extra
// iteration changes nothing.
class LaggedFlags {
 public:
  explicit LaggedFlags(int64_t n)
      : host_(at::empty({n}, at::TensorOptions().dtype(at::kBool).pinned_memory(true))),
        ready_(static_cast<size_t>(n)) {}

  void push(int64_t t, const Tensor& flag) {
    host_.narrow(0, t, 1).copy_(flag.reshape({1}), /*non_blocking=*/true);
    ready_[t].record();
  }

  bool get(int64_t t) {
    ready_[t].synchronize();
    return host_.const_data_ptr<bool>()[t];
  }

 private:
  Tensor host_;
  std::vector<at::cuda::CUDAEvent> ready_;
};

// Unit centroids [2 * nodes, d] (left, right of each node) of one split, and, through
// `points`, the canonical order of the next level.
Tensor split_level(const Tensor& xn, Tensor& points, const Level& level, int64_t level_index,
                   int64_t iters, uint64_t seed) {
  const int64_t nodes = int64_t(level.offsets.size()) - 1, n = xn.size(0), d = xn.size(1);
  std::vector<int64_t> seed_pos(2 * nodes);
  for (int64_t k = 0; k < nodes; ++k) {
    const int64_t begin = level.offsets[k];
    const SeedPair s = seed_positions(seed, level_index, k, level.offsets[k + 1] - begin);
    seed_pos[2 * k] = begin + s.left;
    seed_pos[2 * k + 1] = begin + s.right;
  }
  Tensor centres = xn.index_select(0, points.index_select(0, to_device(seed_pos, points.options())));
  Tensor side;  // by canonical position: in the right child
  LaggedFlags changed(iters);
  for (int64_t t = 0; t < iters; ++t) {
    const Tensor pairs = centres.view({nodes, 2, d});
    const Tensor direction = (pairs.select(1, 1) - pairs.select(1, 0)).contiguous();
    // A node is a "query" whose shortlist is its points: the shortlist scoring kernel.
    Tensor scores = at::empty({n}, xn.options());
    shortlist::score_cuda(direction, xn, level.offsets_device, points, std::nullopt, scores);
    const Tensor order = split_order(scores, level);
    Tensor new_side = at::empty_like(level.right_of_pos).index_copy_(0, order, level.right_of_pos);
    if (t > 0) changed.push(t, new_side.ne(side).any());
    side = new_side;
    centres = unit_rows(level.sums(xn, points.index_select(0, order)));
    if (t > 1 && !changed.get(t - 1)) break;  // every node was at a fixed point by t - 1
  }
  const Tensor child = level.node_of_pos * 2 + side.to(at::kLong);
  points = points.index_select(0, std::get<1>(at::sort(child, /*stable=*/true, 0, false)));
  return centres;
}

void balanced_kmeans_cuda(const Tensor& xn, int64_t depth, int64_t iters, uint64_t seed,
                          const Tensor& assign, const Tensor& centroids) {
  const c10::cuda::CUDAGuard guard(xn.device());
  const int64_t n = xn.size(0);
  Tensor points = at::arange(n, xn.options().dtype(at::kLong));
  std::vector<int64_t> offsets = {0, n};
  Tensor centres;
  for (int64_t level_index = 0; level_index < depth; ++level_index) {
    const Level level(offsets, xn);
    centres = split_level(xn, points, level, level_index, iters, seed);
    offsets = level.children;
  }
  assign.index_copy_(0, points, node_of_position(offsets, points.options()));
  centroids.copy_(centres);
}

#endif  // XCOPS_WITH_CUDA

std::tuple<Tensor, Tensor> balanced_kmeans(const Tensor& x, int64_t num_clusters, int64_t iters,
                                           int64_t seed) {
  const char* op = "xcops.balanced_kmeans";
  check_float_tensor(op, "x", x, 2);
  const int64_t n = x.size(0), d = x.size(1);
  TORCH_CHECK(n >= 1 && d >= 1, op, ": x must have at least one row and one column, got shape ",
              shape_str(x));
  TORCH_CHECK(num_clusters >= 1 && (num_clusters & (num_clusters - 1)) == 0, op,
              ": num_clusters must be a power of two, got ", num_clusters);
  TORCH_CHECK(num_clusters <= n, op, ": num_clusters must be <= the number of points N = ", n,
              ", got ", num_clusters);
  TORCH_CHECK(iters >= 1, op, ": iters must be >= 1, got ", iters);
  const Tensor xn = checked_unit_rows(op, x);
  Tensor assign = at::empty({n}, x.options().dtype(at::kLong));
  Tensor centroids = at::empty({num_clusters, d}, xn.options());
  int64_t depth = 0;
  while ((int64_t(1) << depth) < num_clusters) ++depth;
  if (depth == 0) {
    assign.zero_();
    centroids.copy_(unit_rows(xn.sum(0, /*keepdim=*/true)));
  } else {
#ifdef XCOPS_WITH_CUDA
    if (x.is_cuda()) {
      balanced_kmeans_cuda(xn, depth, iters, uint64_t(seed), assign, centroids);
      return {assign, centroids.to(x.scalar_type())};
    }
#endif
    balanced_kmeans_cpu(xn, depth, iters, uint64_t(seed), assign, centroids);
  }
  return {assign, centroids.to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(xcops, CPU, m) { m.impl("balanced_kmeans", &balanced_kmeans); }

#ifdef XCOPS_WITH_CUDA
TORCH_LIBRARY_IMPL(xcops, CUDA, m) { m.impl("balanced_kmeans", &balanced_kmeans); }
#endif

}  // namespace xcops::clustering
