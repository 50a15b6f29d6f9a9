// The GEMM runs transposed: a micro-tile is kLabels labels x 32 queries, the labels' weight
// rows read in place (one broadcast per weight element) and the queries packed [d][32] per
// 32-row group, so the [L, d] weight is never copied or packed. Each tile's scores are
// compared in registers with the 32 rows' running thresholds (one compare per score); only
// scores that pass leave the registers, into the rows' RowTopk. Each thread owns a range of
// whole 32-row groups and streams all labels over them, in blocks of groups whose packed
// queries stay in L2.
#include "topk/fused_topk_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "topk/row_topk.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define XCOPS_FUSED_TOPK 1
#endif

namespace xcops::topk {

#ifdef XCOPS_FUSED_TOPK
namespace {

constexpr int kLabels = 8;         // labels per micro-tile: 16 accumulators of 16 floats
constexpr int kGroup = 32;         // queries per micro-tile, two zmm registers
constexpr int64_t kBlockBytes = 256 << 10;  // packed queries of a block: a quarter of a 1 MB L2

#define XCOPS_AVX512 __attribute__((target("avx512f")))

struct Tile {
  const float* weight;  // weight rows of the tile's first label
  int64_t d;
  const float* packed;  // the group's queries, [d][32]
  const float* bias;    // bias of the tile's first label, or nullptr
};

// Scores of labels [0, labels) of the tile for the 32 queries; rows of higher labels are 0.
template <int labels>
XCOPS_AVX512 inline void score_tile(const Tile& t, __m512 (&acc)[kLabels][2]) {
  for (int m = 0; m < labels; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < t.d; ++p) {
    const __m512 q0 = _mm512_load_ps(t.packed + p * kGroup);
    const __m512 q1 = _mm512_load_ps(t.packed + p * kGroup + 16);
    for (int m = 0; m < labels; ++m) {
      const __m512 w = _mm512_set1_ps(t.weight[m * t.d + p]);
      acc[m][0] = _mm512_fmadd_ps(w, q0, acc[m][0]);
      acc[m][1] = _mm512_fmadd_ps(w, q1, acc[m][1]);
    }
  }
  if (t.bias != nullptr) {
    for (int m = 0; m < labels; ++m) {
      const __m512 b = _mm512_set1_ps(t.bias[m]);
      acc[m][0] = _mm512_add_ps(acc[m][0], b);
      acc[m][1] = _mm512_add_ps(acc[m][1], b);
    }
  }
}

struct Exclusions {
  const int64_t* indptr;   // CSR over all rows, or nullptr for none
  const int64_t* indices;  // each row's ids; sorted copies are made per thread
};

struct Group {
  RowTopk<float>* rows;       // the group's rows
  float* thresholds;          // their thresholds, 32 floats (64-byte aligned)
  __mmask16 valid[2];         // lanes that are real rows
  const int64_t* const* excluded;  // per row: its sorted excluded ids [excluded[r], excluded[r + 1]), or nullptr
};

bool is_excluded(const Group& g, int row, int64_t label) {
  return g.excluded != nullptr && std::binary_search(g.excluded[row], g.excluded[row + 1], label);
}

// Offers the tile's passing scores (labels first_label + m) to the group's rows.
template <int labels>
XCOPS_AVX512 inline void filter_tile(const __m512 (&acc)[kLabels][2], Group& g, int64_t first_label) {
  __m512 threshold[2] = {_mm512_load_ps(g.thresholds), _mm512_load_ps(g.thresholds + 16)};
  for (int m = 0; m < labels; ++m) {
    for (int h = 0; h < 2; ++h) {
      // not-less-than, unordered: s >= threshold, or NaN
      __mmask16 pass = _mm512_mask_cmp_ps_mask(g.valid[h], acc[m][h], threshold[h], _CMP_NLT_UQ);
      if (pass == 0) continue;
      alignas(64) float scores[16];
      _mm512_store_ps(scores, acc[m][h]);
      for (; pass != 0; pass &= pass - 1) {
        const int lane = __builtin_ctz(pass), row = h * 16 + lane;
        if (is_excluded(g, row, first_label + m)) continue;
        g.rows[row].offer(scores[lane], first_label + m);
        g.thresholds[row] = g.rows[row].threshold();
      }
      threshold[h] = _mm512_load_ps(g.thresholds + 16 * h);
    }
  }
}

template <int labels>
XCOPS_AVX512 void tile_step(const Tile& t, Group& g, int64_t first_label) {
  __m512 acc[kLabels][2];
  score_tile<labels>(t, acc);
  filter_tile<labels>(acc, g, first_label);
}

using TileStep = void (*)(const Tile&, Group&, int64_t);
constexpr TileStep kTailSteps[kLabels] = {nullptr,        &tile_step<1>, &tile_step<2>, &tile_step<3>,
                                          &tile_step<4>,  &tile_step<5>, &tile_step<6>, &tile_step<7>};

// Rows [row_begin, row_end) against all labels.
XCOPS_AVX512 void topk_rows(const float* query, const float* weight, const float* bias, const Exclusions& ex,
                            int64_t labels, int64_t d, int64_t k, int64_t row_begin, int64_t row_end,
                            float* values, int64_t* ids) {
  const int64_t rows = row_end - row_begin, groups = (rows + kGroup - 1) / kGroup;
  // The rows' excluded ids, sorted, and per row (padding rows too) where its ids begin.
  std::vector<int64_t> excluded_ids;
  std::vector<const int64_t*> excluded(ex.indptr ? groups * kGroup + 1 : 0);
  if (ex.indptr) {
    const int64_t base = ex.indptr[row_begin];
    excluded_ids.assign(ex.indices + base, ex.indices + ex.indptr[row_end]);
    for (int64_t r = 0; r <= groups * kGroup; ++r) {
      excluded[r] = excluded_ids.data() + (ex.indptr[row_begin + std::min(r, rows)] - base);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const auto first = excluded_ids.begin() + (excluded[r] - excluded_ids.data());
      std::sort(first, first + (excluded[r + 1] - excluded[r]));
    }
  }
  std::vector<RowTopk<float>> best(groups * kGroup, RowTopk<float>(k));
  float* packed = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * groups * kGroup * d));
  float* thresholds = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * groups * kGroup));
  std::vector<Group> group(groups);
  for (int64_t g = 0; g < groups; ++g) {
    float* dst = packed + g * kGroup * d;
    for (int lane = 0; lane < kGroup; ++lane) {
      const int64_t r = g * kGroup + lane;
      for (int64_t p = 0; p < d; ++p) dst[p * kGroup + lane] = r < rows ? query[(row_begin + r) * d + p] : 0.0f;
      thresholds[g * kGroup + lane] = best[r].threshold();
    }
    const int64_t real = std::min<int64_t>(kGroup, rows - g * kGroup);
    group[g] = {&best[g * kGroup], thresholds + g * kGroup,
                {__mmask16(real >= 16 ? 0xFFFF : (1u << real) - 1),
                 __mmask16(real <= 16 ? 0 : real >= 32 ? 0xFFFF : (1u << (real - 16)) - 1)},
                ex.indptr ? excluded.data() + g * kGroup : nullptr};
  }
  const int64_t full = labels - labels % kLabels;
  const int64_t block_groups = std::max<int64_t>(1, kBlockBytes / int64_t(sizeof(float) * kGroup * d));
  for (int64_t g0 = 0; g0 < groups; g0 += block_groups) {
    const int64_t g1 = std::min(groups, g0 + block_groups);
    for (int64_t j = 0; j < labels; j += kLabels) {
      const TileStep step = j < full ? &tile_step<kLabels> : kTailSteps[labels - full];
      for (int64_t g = g0; g < g1; ++g) {
        step({weight + j * d, d, packed + g * kGroup * d, bias ? bias + j : nullptr}, group[g], j);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) best[r].write(values + (row_begin + r) * k, ids + (row_begin + r) * k);
  std::free(packed);
  std::free(thresholds);
}

}  // namespace

bool fused_topk_cpu_applies(int64_t rows) {
  return __builtin_cpu_supports("avx512f") && rows >= kGroup * at::get_num_threads();
}

void fused_topk_cpu(const at::Tensor& query, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& exclude_indptr,
                    const std::optional<at::Tensor>& exclude_indices, at::Tensor& values, at::Tensor& ids) {
  const Exclusions ex{exclude_indptr ? exclude_indptr->const_data_ptr<int64_t>() : nullptr,
                      exclude_indices ? exclude_indices->const_data_ptr<int64_t>() : nullptr};
  const int64_t rows = query.size(0), d = query.size(1), labels = weight.size(0), k = values.size(1);
  const float* q = query.const_data_ptr<float>();
  const float* w = weight.const_data_ptr<float>();
  const float* b = bias ? bias->const_data_ptr<float>() : nullptr;
  float* v = values.data_ptr<float>();
  int64_t* id = ids.data_ptr<int64_t>();
  // One task per thread over whole groups, so each thread streams the labels once per block.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t groups = (rows + kGroup - 1) / kGroup, per_thread = (groups + threads - 1) / threads;
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t begin = std::min(rows, t * per_thread * kGroup);
      const int64_t end = std::min(rows, (t + 1) * per_thread * kGroup);
      if (begin < end) topk_rows(q, w, b, ex, labels, d, k, begin, end, v, id);
    }
  });
}

#else  // no AVX-512 build: the buffered path runs instead

bool fused_topk_cpu_applies(int64_t) { return false; }

void fused_topk_cpu(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, at::Tensor&, at::Tensor&) {
  TORCH_CHECK(false, "xcops: the fused CPU top-k needs an x86-64 build");
}

#endif

}  // namespace xcops::topk
