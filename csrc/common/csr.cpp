#include "common/csr.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/stack.h>

#include <string>
#include <vector>

#include "common/checks.h"

namespace xcops {

void check_csr_layout(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                      int64_t rows, const at::Tensor& like) {
  const std::string indptr_name = std::string(spec.name) + " indptr";
  const std::string indices_name = std::string(spec.name) + " indices";
  check_index_tensor(spec.op, indptr_name.c_str(), indptr);
  check_index_tensor(spec.op, indices_name.c_str(), indices);
  check_same_dtype(spec.op, indices_name.c_str(), indices, indptr_name.c_str(), indptr);
  check_same_device(spec.op, indptr_name.c_str(), indptr, "query", like);
  check_same_device(spec.op, indices_name.c_str(), indices, "query", like);
  TORCH_CHECK(indptr.numel() == rows + 1, spec.op, ": ", indptr_name, " must have B + 1 = ",
              rows + 1, " entries for B = ", rows, " query rows, got ", indptr.numel());
}

CsrFacts check_csr_values(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                          int64_t num_ids) {
  const int64_t rows = indptr.numel() - 1;
  const int64_t nnz = indices.numel();
  auto as_long = [](const at::Tensor& t) { return t.to(at::kLong); };
  std::vector<at::Tensor> facts = {as_long(indptr.select(0, 0)), as_long(indptr.select(0, rows))};
  if (rows > 0) {
    const at::Tensor lengths = as_long(indptr.slice(0, 1)) - as_long(indptr.slice(0, 0, rows));
    auto [shortest, longest] = at::aminmax(lengths);
    facts.push_back(shortest);
    facts.push_back(longest);
  }
  if (nnz > 0) {
    auto [lo, hi] = at::aminmax(indices);
    facts.push_back(as_long(lo));
    facts.push_back(as_long(hi));
  }
  const at::Tensor host = at::stack(facts).cpu();
  const int64_t* f = host.const_data_ptr<int64_t>();
  TORCH_CHECK(f[0] == 0, spec.op, ": ", spec.name, " indptr[0] must be 0, got ", f[0]);
  TORCH_CHECK(f[1] == nnz, spec.op, ": ", spec.name,
              " indptr[-1] must equal the number of indices (", nnz, "), got ", f[1]);
  CsrFacts out;
  size_t next = 2;
  if (rows > 0) {
    TORCH_CHECK(f[next] >= 0, spec.op, ": ", spec.name,
                " indptr must be non-decreasing, but a row has length ", f[next]);
    out.max_row_length = f[next + 1];
    next += 2;
  }
  if (nnz > 0) {
    TORCH_CHECK(f[next] >= -1, spec.op, ": ", spec.name,
                " ids must be >= -1 (-1 = padding), got ", f[next]);
    TORCH_CHECK(f[next + 1] < num_ids, spec.op, ": ", spec.name, " ids must be < ", spec.id_limit,
                " = ", num_ids, ", got ", f[next + 1]);
  }
  return out;
}

}  // namespace xcops
