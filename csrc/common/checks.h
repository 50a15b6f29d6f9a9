#pragma once
// Argument checks shared by every op. Each message names the op, the argument and the value
// it actually had, so a user can fix the call without reading our sources.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <sstream>
#include <string>

namespace xcops {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline bool is_index_type(at::ScalarType t) { return t == at::kInt || t == at::kLong; }

// A float tensor of `dim` dimensions, dense, contiguous, of a supported dtype.
inline void check_float_tensor(const char* op, const char* name, const at::Tensor& t, int64_t dim) {
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, " must be a dense tensor, got layout ",
              t.layout());
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ", shape_str(t));
  TORCH_CHECK(is_supported_float(t.scalar_type()), op, ": ", name,
              " must be float32, float64, bfloat16 or float16, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous()), got strides ",
              t.strides());
}

// A 1-D contiguous int32/int64 tensor.
inline void check_index_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, " must be a dense tensor, got layout ",
              t.layout());
  TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D, got shape ", shape_str(t));
  TORCH_CHECK(is_index_type(t.scalar_type()), op, ": ", name, " must be int32 or int64, got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t,
                              const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device());
}

inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t,
                             const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but ", ref_name, " has dtype ", ref.scalar_type());
}

// An optional per-label bias [L], like the query in dtype and device.
inline void check_label_bias(const char* op, const std::optional<at::Tensor>& bias,
                             const at::Tensor& query, const at::Tensor& weight) {
  if (!bias) return;
  check_float_tensor(op, "bias", *bias, 1);
  check_same_dtype(op, "bias", *bias, "query", query);
  check_same_device(op, "bias", *bias, "query", query);
  TORCH_CHECK(bias->numel() == weight.size(0), op, ": bias must have L = ", weight.size(0),
              " entries (weight.size(0)), got ", bias->numel());
}

}  // namespace xcops
