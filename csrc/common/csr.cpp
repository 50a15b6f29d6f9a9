#include "common/csr.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/_assert_async.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/stack.h>
#ifdef XCOPS_WITH_CUDA
#include <c10/cuda/CUDAGraphsC10Utils.h>
#endif

#include <atomic>
#include <limits>
#include <string>
#include <vector>

#include "common/checks.h"

namespace xcops {
namespace {

std::atomic<bool> g_device_checks{false};

bool use_device_checks(const at::Tensor& t) {
  if (!t.is_cuda()) return false;
  if (g_device_checks.load(std::memory_order_relaxed)) return true;
#ifdef XCOPS_WITH_CUDA
  // A host copy is illegal inside a capture; the assert is the only check that can run there.
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
#else
  return false;
#endif
}

// Largest id an `index` tensor can hold: a comparison with a larger scalar would wrap.
int64_t dtype_max(const at::Tensor& index) {
  return index.scalar_type() == at::kInt ? std::numeric_limits<int32_t>::max()
                                         : std::numeric_limits<int64_t>::max();
}

// The checks of check_csr_values as one device-side assert: a handful of small kernels, no
// host copy.
void assert_csr_values(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                       int64_t num_ids) {
  const int64_t rows = indptr.numel() - 1, nnz = indices.numel();
  at::Tensor ok = (indptr.select(0, 0) == 0).logical_and(indptr.select(0, rows).to(at::kLong) == nnz);
  if (rows > 0) ok = ok.logical_and((indptr.slice(0, 1) >= indptr.slice(0, 0, rows)).all());
  if (nnz > 0) {
    auto [lo, hi] = at::aminmax(indices);
    ok = ok.logical_and(lo >= -1);
    if (num_ids <= dtype_max(indices)) ok = ok.logical_and(hi < num_ids);
  }
  const std::string message = std::string(spec.op) + ": " + spec.name +
                              " is not a valid CSR (indptr[0] == 0, indptr[-1] == nnz, "
                              "non-decreasing) with ids in [-1, " + spec.id_limit + ")";
  at::_assert_async(ok, message);
}

}  // namespace

bool set_device_checks(bool enabled) { return g_device_checks.exchange(enabled); }

void check_csr_layout(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                      int64_t rows, const at::Tensor& like) {
  const std::string indptr_name = std::string(spec.name) + " indptr";
  const std::string indices_name = std::string(spec.name) + " indices";
  check_index_tensor(spec.op, indices_name.c_str(), indices);
  check_index_tensor(spec.op, indptr_name.c_str(), indptr);
  check_same_dtype(spec.op, indices_name.c_str(), indices, indptr_name.c_str(), indptr);
  check_same_device(spec.op, indices_name.c_str(), indices, "query", like);
  check_same_device(spec.op, indptr_name.c_str(), indptr, "query", like);
  TORCH_CHECK(indptr.numel() == rows + 1, spec.op, ": ", indptr_name, " must have B + 1 = ",
              rows + 1, " entries for B = ", rows, " query rows, got ", indptr.numel());
}

CsrFacts check_csr_values(const CsrSpec& spec, const at::Tensor& indptr, const at::Tensor& indices,
                          int64_t num_ids, bool want_max_row_length) {
  const int64_t rows = indptr.numel() - 1;
  const int64_t nnz = indices.numel();
  auto as_long = [](const at::Tensor& t) { return t.to(at::kLong); };
  const bool on_device = use_device_checks(indices);
  if (on_device) {
    assert_csr_values(spec, indptr, indices, num_ids);
    if (!want_max_row_length || rows == 0) return {};
  }
  std::vector<at::Tensor> facts = {as_long(indptr.select(0, 0)), as_long(indptr.select(0, rows))};
  if (rows > 0) {
    const at::Tensor lengths = as_long(indptr.slice(0, 1)) - as_long(indptr.slice(0, 0, rows));
    auto [shortest, longest] = at::aminmax(lengths);
    facts.push_back(shortest);
    facts.push_back(longest);
  }
  if (on_device) return {facts[3].item<int64_t>()};
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
