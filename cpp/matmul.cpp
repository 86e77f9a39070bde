// The GEMM family: the pick of the instruction-set build of simd/gemm.inl, and the dense
// matrix product for the network layer (fully connected layers, Gram matrices) on the same
// GEMM and OpenMP threads as the convolutions: mixing in NumPy's OpenBLAS would put a second
// spinning thread pool on the same cores.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>

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

// Rows of A at most this many (a fully connected layer at batch 1 to 4) skip the packed
// GEMM: the product is bound by reading B, which the dot/axpy loops below stream once, where
// the GEMM would first copy all of B into its panel layout.
constexpr int64_t kStreamedRows = 4;

template <typename T>
void streamed_product(int64_t m, int64_t n, int64_t k, MatrixView<T> a, MatrixView<T> b,
                      T* c) {
  if (b.row_stride == 1) {
    // Column j of B is contiguous (B is a transposed row-major weight, x @ W.T): one dot
    // product per output, each summed in one fixed order by one thread.
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      const T* bj = b.data + j * b.col_stride;
      for (int64_t i = 0; i < m; ++i) {
        const T* ai = a.data + i * a.row_stride;
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t p = 0; p < k; ++p) acc += ai[p * a.col_stride] * bj[p];
        c[i * n + j] = acc;
      }
    }
    return;
  }
  // Otherwise rows of B run along j: accumulate a[i, p] * B[p, j-block] over p.
  constexpr int64_t kBlock = 256;
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
    const int64_t len = std::min(kBlock, n - j0);
    T acc[kBlock];
    for (int64_t i = 0; i < m; ++i) {
      std::fill(acc, acc + len, T(0));
      for (int64_t p = 0; p < k; ++p) {
        const T ap = a.data[i * a.row_stride + p * a.col_stride];
        const T* row = b.data + p * b.row_stride + j0 * b.col_stride;
#pragma omp simd
        for (int64_t jj = 0; jj < len; ++jj) acc[jj] += ap * row[jj * b.col_stride];
      }
      std::copy(acc, acc + len, c + i * n + j0);
    }
  }
}

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
    if (m <= kStreamedRows) {
      streamed_product(m, n, k, av, bv, c);
      return;
    }
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
  });
}

}  // namespace

void bind_matmul(py::module_& m) {
  m.def("matmul", &matmul_py, py::arg("a"), py::arg("b"), py::arg("out"),
        "out (M, N) <- a (M, K) @ b (K, N); a and b may be any strided 2-D views.");
}

}  // namespace fastconv
