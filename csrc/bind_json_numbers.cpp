// Python glue for json_numbers: a JSON array's numbers into a float64 numpy array, the GIL released while parsing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "json_numbers.hpp"

namespace py = pybind11;

namespace unirt {

void register_json_numbers(py::module_& m) {
  m.def(
      "json_numbers",
      [](py::buffer data, py::ssize_t start, py::ssize_t stop) -> py::object {
        const py::buffer_info info = data.request();
        if (info.itemsize != 1 || info.ndim != 1 || (info.ndim == 1 && info.strides[0] != 1)) {
          throw py::type_error("json_numbers: data must be contiguous bytes");
        }
        if (start < 0 || stop < start || stop > info.size) {
          throw py::value_error("json_numbers: start/stop outside the data (0 <= start <= stop <= len(data))");
        }
        const char* text = static_cast<const char*>(info.ptr) + start;
        const auto size = static_cast<std::size_t>(stop - start);
        std::size_t capacity = 0;
        {
          py::gil_scoped_release release;
          capacity = json_numbers_capacity(text, size);
        }
        py::array_t<double> out(static_cast<py::ssize_t>(capacity));
        double* dst = out.mutable_data();
        JsonNumbers r;
        {
          py::gil_scoped_release release;
          r = parse_json_numbers(text, size, dst, capacity);
        }
        if (!r.ok || r.count != capacity) return py::none();
        return py::make_tuple(out, r.integral);
      },
      py::arg("data"), py::arg("start"), py::arg("stop"),
      "The numbers of the JSON array whose inside is data[start:stop], as (float64 array, every number written "
      "as an integer), or None when that text is not just JSON numbers separated by commas.");
}

}  // namespace unirt
