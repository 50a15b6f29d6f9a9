#pragma once
#include <pybind11/pybind11.h>

namespace xcops::data {
// Adds the fast parsers/writers of the Extreme Classification Repository text formats.
void register_xc_format(pybind11::module_& m);
}  // namespace xcops::data
