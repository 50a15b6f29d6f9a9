#pragma once
// Checks of the CSR row -> ids structures the ops take (shortlists, exclusions, positives).
#include <ATen/core/Tensor.h>

namespace xcops {

struct CsrSpec {
  const char* op;        // e.g. "xcops.shortlist_score"
  const char* name;      // the argument, e.g. "shortlist": prefixes every message
  const char* id_limit;  // what ids index, e.g. "the number of labels L (weight.size(0))"
};

struct CsrFacts {
  int64_t max_row_length = 0;
};

// dtype, shape and device of (indptr [rows + 1], indices [nnz]); reads no data.
void check_csr_layout(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                      int64_t rows, const at::Tensor& like);

// indptr[0] == 0, indptr[-1] == nnz, non-decreasing, and -1 <= ids < num_ids, checked against
// the data: one small reduction and one device-to-host copy, so a bad id is an error rather
// than a wild read.
CsrFacts check_csr_values(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                          int64_t num_ids);

}  // namespace xcops
