// The xcops._C Python module. Loading it runs the TORCH_LIBRARY registrations of every op;
// the module itself only exposes build facts and helpers that are not torch ops.
#include <pybind11/pybind11.h>

#include "data/xc_format.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "xcops compiled kernels";
  m.def("build_info", []() {
    py::dict info;
    info["torch_version"] = XCOPS_TORCH_VERSION;
#ifdef XCOPS_WITH_CUDA
    info["cuda"] = true;
    info["cuda_version"] = XCOPS_CUDA_VERSION;
    py::list archs;
    std::string all = XCOPS_CUDA_ARCHS;
    size_t start = 0;
    while (start <= all.size()) {
      size_t end = all.find(',', start);
      if (end == std::string::npos) end = all.size();
      if (end > start) archs.append(all.substr(start, end - start));
      start = end + 1;
    }
    info["cuda_archs"] = archs;
#else
    info["cuda"] = false;
    info["cuda_version"] = py::none();
    info["cuda_archs"] = py::list();
#endif
    return info;
  });
  xcops::data::register_xc_format(m);
}
