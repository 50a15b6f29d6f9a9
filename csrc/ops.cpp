// Every xcops op schema, in one place. Kernels register their implementations per dispatch
// key next to their sources; fake kernels and autograd live in python/xcops/ops.
#include <torch/library.h>

#include "common/csr.h"

TORCH_LIBRARY(xcops, m) {
  // A shortlist is CSR: row b owns indices[indptr[b]:indptr[b+1]] (label ids, -1 = padding).
  // The padded [B, K] layout of the Python API is the CSR with indptr = arange(B + 1) * K.
  m.def(
      "shortlist_score(Tensor query, Tensor weight, Tensor indptr, Tensor indices, "
      "Tensor? bias=None, bool sparse_grad=False) -> Tensor");
  m.def(
      "shortlist_topk(Tensor query, Tensor weight, Tensor indptr, Tensor indices, int k, "
      "Tensor? bias=None) -> (Tensor, Tensor)");
  // Backward pieces. The weight gradient is compact: the unique touched label ids (sorted)
  // with one gradient row and one bias gradient each.
  m.def(
      "shortlist_score_backward_query(Tensor grad_scores, Tensor weight, Tensor indptr, "
      "Tensor indices) -> Tensor");
  m.def(
      "shortlist_score_backward_weight(Tensor grad_scores, Tensor query, Tensor indptr, "
      "Tensor indices) -> (Tensor, Tensor, Tensor)");
  // The same gradient as dense [num_labels, d] and [num_labels] tensors (zero for untouched
  // labels): sizes come from shapes, so on CUDA it needs no host sync.
  m.def(
      "shortlist_score_backward_weight_dense(Tensor grad_scores, Tensor query, Tensor indptr, "
      "Tensor indices, int num_labels) -> (Tensor, Tensor)");

  // Hierarchical spherical 2-means with exactly balanced splits: rows of x are L2-normalised,
  // every node of a tree level splits at once, num_clusters is a power of two <= N.
  // Returns (assign [N] int64 in [0, num_clusters), unit-norm centroids [num_clusters, d] in
  // the dtype of x).
  m.def("balanced_kmeans(Tensor x, int num_clusters, int iters, int seed) -> (Tensor, Tensor)");

  // Exact top-k of query @ weight.T (+ bias [L]) over all L labels, streamed over label
  // chunks. The optional CSR (exclude_indptr [B + 1], exclude_indices) lists ids never to
  // return for a row. Returns (values [B, k] in the query dtype, label ids [B, k] int64);
  // slots with no candidate left hold -inf and -1.
  m.def(
      "dense_topk(Tensor query, Tensor weight, int k, Tensor? exclude_indptr=None, "
      "Tensor? exclude_indices=None, Tensor? bias=None) -> (Tensor, Tensor)");
  // The k highest-scoring columns of labels [P, d] per query row that are not among the row's
  // positives (CSR over [0, P)); 1 <= k <= P, and the slots a row has no negative for are
  // empty (-inf, -1). The scores are not differentiable here: xcops.hard_negatives re-scores
  // the ids with shortlist_score to train through them.
  m.def(
      "hard_negatives(Tensor query, Tensor labels, Tensor positives_indptr, "
      "Tensor positives_indices, int k) -> (Tensor, Tensor)");

  // CUDA id checks of the CSR inputs as device-side asserts (no host sync; a bad id aborts
  // the CUDA context) instead of host checks with clear messages; returns the old setting.
  m.def("set_device_checks(bool enabled) -> bool", &xcops::set_device_checks);
}
