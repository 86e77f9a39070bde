// The GEMM family: the pick of the instruction-set build of simd/gemm.inl, and the dense
// matrix product for the network layer (fully connected layers, Gram matrices) on the same
// GEMM and OpenMP threads as the convolutions: mixing in NumPy's OpenBLAS would put a second
// spinning thread pool on the same cores.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/gemm.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

const GemmKernels& gemm_kernels() {
  static const GemmKernels& kernels =
      for_cpu_path(avx512::gemm_table, avx2::gemm_table, baseline::gemm_table)();
  return kernels;
}

namespace {

// Element strides of a 2-D operand; any NumPy view of a float array (transposes included)
// is read in place.
template <typename T>
MatrixView<T> view_of(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(concat(name, " must have dtype ", dtype_label<T>(),
                                " like the other arguments, got ", dtype_name(a)));
  }
  FC_CHECK(a.ndim() == 2, name, " must be 2-D, got shape ", tuple_str(shape_of(a)));
  FC_CHECK(a.strides(0) % int64_t(sizeof(T)) == 0 && a.strides(1) % int64_t(sizeof(T)) == 0,
           name, " has strides not aligned to its element size");
  return {static_cast<const T*>(a.data()), a.strides(0) / int64_t(sizeof(T)),
          a.strides(1) / int64_t(sizeof(T))};
}

// A of at most kStreamedMaxRows rows (a fully connected layer at batch 1 to 4) skips the
// packed GEMM: the product is bound by reading B, which the streamed kernel reads in place
// once, where the GEMM would first copy all of B into its panel layout.
template <typename T>
bool streamable(int64_t m, MatrixView<T> b) {
  return m >= 1 && m <= kStreamedMaxRows && (b.row_stride == 1 || b.col_stride == 1);
}

// Column blocks of C on the threads; each output is summed by one job in one order.
template <typename T>
void streamed_product(int64_t m, int64_t n, int64_t k, MatrixView<T> a, MatrixView<T> b,
                      T* c) {
  std::vector<T> rows(m * k);  // A is tiny: its rows are made contiguous once
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t p = 0; p < k; ++p) rows[i * k + p] = a.data[i * a.row_stride + p * a.col_stride];
  }
  constexpr int64_t kColumns = 2048;
  const int64_t blocks = (n + kColumns - 1) / kColumns;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < blocks; ++block) {
    gemm_streamed(m, block * kColumns, std::min(n, (block + 1) * kColumns), k, rows.data(), b,
                  c, n);
  }
}

// C (m x n, contiguous) = a * b on the threads.
template <typename T>
void product(int64_t m, int64_t n, int64_t k, MatrixView<T> av, MatrixView<T> bv, T* c) {
  // Row blocks when there are enough rows, else column blocks; each output element is
  // summed by one job in one order, so the thread count never changes the result.
  const int64_t threads = omp_get_max_threads();
  const bool by_rows = m >= threads * 4 * gemm_kernels().panel_rows;
  const int64_t extent = by_rows ? m : n;
  const int64_t step = by_rows ? round_up_rows((m + threads - 1) / threads)
                               : std::max<int64_t>(64, (n + threads - 1) / threads / 16 * 16);
#pragma omp parallel for schedule(static)
  for (int64_t start = 0; start < extent; start += step) {
    const int64_t len = std::min(step, extent - start);
    if (by_rows) {
      gemm(len, n, k, MatrixView<T>{av.data + start * av.row_stride, av.row_stride,
                                    av.col_stride},
           bv, c + start * n, n, false);
    } else {
      gemm(m, len, k, av,
           MatrixView<T>{bv.data + start * bv.col_stride, bv.row_stride, bv.col_stride},
           c + start, n, false);
    }
  }
}

// Values of B from which a transposed B is multiplied as C^T = B^T A^T (see matmul_py).
constexpr int64_t kTransposedMinValues = int64_t(1) << 16;

void matmul_py(const py::array& a, const py::array& b, py::array& out) {
  check_ndim(a, 2, "a");
  check_ndim(b, 2, "b");
  const int64_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
  FC_CHECK(b.shape(0) == k, "matmul: a shape ", tuple_str(shape_of(a)), " and b shape ",
           tuple_str(shape_of(b)), " do not match");
  check_shape(out, {m, n}, "out");
  dispatch_float(float_dtype(a, "a"), [&](auto zero) {
    using T = decltype(zero);
    const MatrixView<T> av = view_of<T>(a, "a"), bv = view_of<T>(b, "b");
    T* c = output_ptr<T>(out, "out");
    py::gil_scoped_release release;
    if (streamable(m, bv)) {
      streamed_product(m, n, k, av, bv, c);
      return;
    }
    if (bv.row_stride == 1 && bv.col_stride != 1 && m < n && n * k >= kTransposedMinValues) {
      // b is a transposed row-major matrix (a fully connected layer's x @ W^T): the GEMM
      // would gather every column of it into panels for a few rows of a. C^T = b^T a^T
      // reads b^T's rows as a plain operand instead (16 x 512 @ 512 x 1000: 0.33 -> 0.12
      // ms, 1.26 -> 0.22 in ResNet-18's training step; 8 x 1280 @ 1280 x 1000 0.88 -> 0.29).
      // Each element is the same sum in the same order either way. Small products keep the
      // direct form, which has no transpose to pay for (LeNet's 64 x 120 @ 120 x 84: 0.014
      // vs 0.018 ms).
      std::vector<T> transposed(n * m);
      product(n, m, k, MatrixView<T>{bv.data, bv.col_stride, 1},
              MatrixView<T>{av.data, av.col_stride, av.row_stride}, transposed.data());
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) c[i * n + j] = transposed[j * m + i];
      }
      return;
    }
    product(m, n, k, av, bv, c);
  });
}

}  // namespace

void bind_matmul(py::module_& m) {
  m.def("matmul", &matmul_py, py::arg("a"), py::arg("b"), py::arg("out"),
        "out (M, N) <- a (M, K) @ b (K, N); a and b may be any strided 2-D views.");
}

}  // namespace fastconv
