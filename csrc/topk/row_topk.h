#pragma once
// One row's running top-k on the CPU: up to 2k candidates behind a threshold (the k-th best
// score so far, once k are known); when the buffer fills, nth_element trims it back to k.
// Offers must come in increasing label order, so a tie with the threshold never wins and
// almost every score after the first chunks costs one compare. Ranking as common/topk_key.h.
#include <algorithm>
#include <limits>
#include <vector>

#include "common/topk_key.h"

namespace xcops::topk {

template <typename score_t>
class RowTopk {
 public:
  explicit RowTopk(int64_t k) : k_(k) { candidates_.reserve(2 * k); }

  // Scores below it never enter: callers may skip offering a score s with s < threshold().
  score_t threshold() const { return threshold_; }

  // -inf (an excluded label) never enters; NaN enters unless k NaNs of lower labels are in.
  void offer(score_t s, int64_t label) {
    if (!(s >= threshold_ || (s != s && threshold_ == threshold_)) || s == kMinusInf) return;
    candidates_.push_back({s, label});
    if (int64_t(candidates_.size()) == 2 * k_) threshold_ = trim();
  }

  // The k best, best first, into values[0..k) and ids[0..k); (-inf, -1) where fewer.
  template <typename value_t>
  void write(value_t* values, int64_t* ids) {
    trim();
    std::sort(candidates_.begin(), candidates_.end(), better);
    for (int64_t j = 0; j < k_; ++j) {
      const bool filled = j < int64_t(candidates_.size());
      values[j] = filled ? value_t(candidates_[j].score) : value_t(kMinusInf);
      ids[j] = filled ? candidates_[j].label : -1;
    }
  }

 private:
  struct Candidate {
    score_t score;
    int64_t label;
  };
  static constexpr score_t kMinusInf = -std::numeric_limits<score_t>::infinity();
  static bool better(const Candidate& a, const Candidate& b) {
    return ranks_before(a.score, a.label, b.score, b.label);
  }

  // Keeps the k best candidates; returns the new threshold (the k-th best, once k are known).
  score_t trim() {
    if (int64_t(candidates_.size()) <= k_) return kMinusInf;
    std::nth_element(candidates_.begin(), candidates_.begin() + (k_ - 1), candidates_.end(), better);
    candidates_.resize(k_);
    return candidates_[k_ - 1].score;
  }

  int64_t k_;
  score_t threshold_ = kMinusInf;
  std::vector<Candidate> candidates_;
};

}  // namespace xcops::topk
