// Python glue for batch_copy: gather/scatter over numpy arrays, with the GIL released during the copies.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "batch_copy.hpp"

namespace py = pybind11;

namespace unirt {
namespace {

std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks `a` against the batch array: C-contiguous, same dtype, same dims after the first.
void check_like(const py::array& a, const py::array& batch, const char* what, std::size_t index, bool writable) {
  const std::string where = std::string(what) + "[" + std::to_string(index) + "]";
  if (!(a.flags() & py::array::c_style)) throw py::value_error(where + " is not C-contiguous");
  if (writable && !a.writeable()) throw py::value_error(where + " is read-only");
  if (!a.dtype().is(batch.dtype()) && !a.dtype().equal(batch.dtype())) {
    throw py::value_error(where + " has dtype " + py::str(a.dtype()).cast<std::string>() + ", the batch has " +
                          py::str(batch.dtype()).cast<std::string>());
  }
  bool same = a.ndim() == batch.ndim();
  for (py::ssize_t d = 1; same && d < a.ndim(); ++d) same = a.shape(d) == batch.shape(d);
  if (!same) {
    throw py::value_error(where + " has shape " + shape_text(a) + "; every part must match the batch's " +
                          shape_text(batch) + " after the first dim");
  }
}

void check_batch(const py::array& batch, bool writable) {
  if (batch.ndim() < 1) throw py::value_error("a batch needs at least one dim");
  if (!(batch.flags() & py::array::c_style)) throw py::value_error("the batch array is not C-contiguous");
  if (writable && !batch.writeable()) throw py::value_error("the batch array is read-only");
  if (batch.dtype().attr("hasobject").cast<bool>()) throw py::type_error("cannot copy arrays of Python objects");
}

py::array as_array(const py::handle& obj, const std::string& what) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(what + " must be a numpy array, got " + std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  }
  return py::reinterpret_borrow<py::array>(obj);
}

std::vector<py::array> as_arrays(const py::sequence& seq, const char* what) {
  std::vector<py::array> arrays;
  arrays.reserve(seq.size());
  for (std::size_t i = 0; i < seq.size(); ++i) arrays.push_back(as_array(seq[i], std::string(what) + "[" + std::to_string(i) + "]"));
  return arrays;
}

py::ssize_t gather(const py::sequence& part_seq, const py::object& out_obj, int threads) {
  py::array out = as_array(out_obj, "out");
  const std::vector<py::array> parts = as_arrays(part_seq, "parts");
  check_batch(out, true);
  std::vector<Piece> pieces;
  pieces.reserve(parts.size());
  py::ssize_t rows = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    check_like(parts[i], out, "parts", i, false);
    rows += parts[i].shape(0);
    pieces.push_back({static_cast<const char*>(parts[i].data()), static_cast<std::size_t>(parts[i].nbytes())});
  }
  if (rows > out.shape(0)) {
    throw py::value_error("gather: the parts hold " + std::to_string(rows) + " rows, the batch has room for " +
                          std::to_string(out.shape(0)));
  }
  auto spans = gather_spans(pieces, static_cast<char*>(out.mutable_data()), static_cast<std::size_t>(out.nbytes()));
  {
    // `parts` and `out` hold references to every array for the whole call, so the memory stays valid.
    py::gil_scoped_release release;
    run_copies(spans, threads);
  }
  return rows;
}

py::ssize_t scatter(const py::object& batch_obj, const py::sequence& out_seq, int threads) {
  const py::array batch = as_array(batch_obj, "batch");
  std::vector<py::array> outs = as_arrays(out_seq, "outs");
  check_batch(batch, false);
  std::vector<std::pair<char*, std::size_t>> dsts;
  dsts.reserve(outs.size());
  py::ssize_t rows = 0;
  for (std::size_t i = 0; i < outs.size(); ++i) {
    check_like(outs[i], batch, "outs", i, true);
    rows += outs[i].shape(0);
    dsts.emplace_back(static_cast<char*>(outs[i].mutable_data()), static_cast<std::size_t>(outs[i].nbytes()));
  }
  if (rows > batch.shape(0)) {
    throw py::value_error("scatter: the outputs take " + std::to_string(rows) + " rows, the batch has " +
                          std::to_string(batch.shape(0)));
  }
  auto spans = scatter_spans(static_cast<const char*>(batch.data()), static_cast<std::size_t>(batch.nbytes()), dsts);
  {
    py::gil_scoped_release release;
    run_copies(spans, threads);
  }
  return rows;
}

}  // namespace

void register_batch_copy(py::module_& m) {
  m.def("gather", &gather, py::arg("parts"), py::arg("out"), py::arg("threads") = 1,
        "Copy `parts` one after another along the first dim into `out` and zero its remaining rows, on up to "
        "`threads` threads with the GIL released. Returns the rows written.");
  m.def("scatter", &scatter, py::arg("batch"), py::arg("outs"), py::arg("threads") = 1,
        "Copy consecutive rows of `batch` into each of `outs` in turn, on up to `threads` threads with the GIL "
        "released. Returns the rows read.");
}

}  // namespace unirt
