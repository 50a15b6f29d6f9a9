#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <vector>

#include "common/segment_sum.h"

namespace xcops {

void segment_row_sum_cpu(const at::Tensor& coeff, const at::Tensor& coeff_index,
                         const at::Tensor& source, const at::Tensor& source_index,
                         const at::Tensor& offsets, const at::Tensor& out_rows,
                         const at::Tensor& out_coeffs) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, source.scalar_type(), "segment_row_sum_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t segments = out_rows.size(0), d = out_rows.size(1);
    const scalar_t* c = coeff.const_data_ptr<scalar_t>();
    const scalar_t* src = source.const_data_ptr<scalar_t>();
    const int64_t* c_idx = coeff_index.const_data_ptr<int64_t>();
    const int64_t* s_idx = source_index.const_data_ptr<int64_t>();
    const int64_t* off = offsets.const_data_ptr<int64_t>();
    scalar_t* rows_out = out_rows.data_ptr<scalar_t>();
    scalar_t* coeffs_out = out_coeffs.data_ptr<scalar_t>();
    const int64_t entries = std::max<int64_t>(1, coeff_index.numel());
    const int64_t grain = std::max<int64_t>(1, 32768 * segments / (entries * std::max<int64_t>(1, d)));
    at::parallel_for(0, segments, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(d);
      for (int64_t s = begin; s < end; ++s) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        acc_t coeff_sum = 0;
        for (int64_t t = off[s]; t < off[s + 1]; ++t) {
          const acc_t scale = acc_t(c[c_idx[t]]);
          const scalar_t* row = src + s_idx[t] * d;
          coeff_sum += scale;
          for (int64_t j = 0; j < d; ++j) acc[j] += scale * acc_t(row[j]);
        }
        for (int64_t j = 0; j < d; ++j) rows_out[s * d + j] = scalar_t(acc[j]);
        coeffs_out[s] = scalar_t(coeff_sum);
      }
    });
  });
}

}  // namespace xcops
