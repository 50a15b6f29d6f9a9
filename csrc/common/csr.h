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
  int64_t max_row_length = 0;  // only filled when asked for
};

// dtype, shape and device of (indptr [rows + 1], indices [nnz]); reads no data. indices is
// checked first: for a padded shortlist indptr is derived from it on the same device, so
// its name is the one the caller recognises.
void check_csr_layout(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                      int64_t rows, const at::Tensor& like);

// indptr[0] == 0, indptr[-1] == nnz, non-decreasing, and -1 <= ids < num_ids, checked against
// the data, so a bad id is an error rather than a wild read.
// On the CPU, and on CUDA by default, the facts are copied to the host (one device-to-host
// copy, a sync on CUDA) and a violation raises a RuntimeError naming the argument and value.
// On CUDA with device checks (set_device_checks(true), and always while a CUDA graph is being
// captured) the checks are a device-side assert instead: no sync, capturable, but a bad id
// aborts the CUDA context with a generic device-side assert message.
// want_max_row_length: also return the longest row's length (a sync on CUDA whatever the mode).
CsrFacts check_csr_values(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                          int64_t num_ids, bool want_max_row_length = true);

// Global switch of the CUDA id checks above; returns the previous setting. Trusted callers
// (training loops, torch.compile(mode="reduce-overhead"), CUDA graphs) turn it on.
bool set_device_checks(bool enabled);

}  // namespace xcops
