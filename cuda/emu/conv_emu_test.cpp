// Runs the CUDA conv and im2col kernels under the host emulation (cuda_emu.hpp) against
// naive float64 loops, over random N-D geometry (strides, dilations, asymmetric padding,
// groups, depthwise, tails) and every kernel path. Build and run:
//   g++ -std=c++20 -O1 -g -fsanitize=address,undefined -I cuda/include -I cpp/include
//       cuda/emu/conv_emu_test.cpp cpp/geometry.cpp -o /tmp/conv_emu && /tmp/conv_emu
// (or -fsanitize=thread for races on shared memory). Arguments: [random cases] [first last).
// Exit status 0 when every case passes.
#include "cuda_emu.hpp"
// The emulation must come first: the kernel headers use its keywords.
#include "fastconv_cuda/conv_kernels.cuh"
#include "fastconv_cuda/im2col_kernels.cuh"

#include <cstdio>
#include <random>
#include <string>

using namespace fastconv::cuda;
using fastconv::WindowGeom;

namespace {

struct Case {
  int64_t N, C, K, G;
  std::vector<int64_t> in, kernel, stride, pb, pa, dil;
};

std::string describe(const Case& c) {
  auto v = [](const std::vector<int64_t>& a) {
    std::string s = "(";
    for (auto x : a) s += std::to_string(x) + ",";
    return s + ")";
  };
  return "N" + std::to_string(c.N) + " C" + std::to_string(c.C) + " K" + std::to_string(c.K) +
         " G" + std::to_string(c.G) + " in" + v(c.in) + " k" + v(c.kernel) + " s" + v(c.stride) +
         " pb" + v(c.pb) + " pa" + v(c.pa) + " d" + v(c.dil);
}

ConvParams params_of(const Case& c) {
  WindowGeom w;
  w.batch = c.N;
  w.channels = c.C;
  w.in = c.in;
  w.kernel = c.kernel;
  w.stride = c.stride;
  w.pad_before = c.pb;
  w.pad_after = c.pa;
  w.dilation = c.dil;
  for (size_t d = 0; d < c.in.size(); ++d) {
    w.out.push_back((c.in[d] + c.pb[d] + c.pa[d] - c.dil[d] * (c.kernel[d] - 1) - 1) / c.stride[d] +
                    1);
  }
  ConvParams p = window_params("emu", w);
  p.K = c.K;
  p.G = c.G;
  p.Cg = c.C / c.G;
  p.Kg = c.K / c.G;
  p.R = p.Cg * p.kvol;
  return p;
}

// Input offset (within one channel plane) of output position `pos` under tap `tap`, or -1.
int64_t tap_input(const ConvParams& p, int64_t pos, int64_t tap) {
  int64_t off = 0;
  for (int d = p.dims - 1; d >= 0; --d) {
    const int64_t o = pos % p.out[d], t = tap % p.kernel[d];
    pos /= p.out[d];
    tap /= p.kernel[d];
    const int64_t i = o * p.stride[d] - p.pad_before[d] + t * p.dilation[d];
    if (i < 0 || i >= p.in[d]) return -1;
    off += i * p.in_pitch[d];
  }
  return off;
}

struct Reference {
  std::vector<double> y, dx, dw;
};

Reference reference(const ConvParams& p, const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<double>* bias, const std::vector<double>& dy) {
  Reference r;
  r.y.assign(p.N * p.K * p.out_plane, 0);
  r.dx.assign(p.N * p.C * p.in_plane, 0);
  r.dw.assign(p.K * p.R, 0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t g = k / p.Kg;
      for (int64_t pos = 0; pos < p.out_plane; ++pos) {
        const int64_t yi = (n * p.K + k) * p.out_plane + pos;
        double acc = bias ? (*bias)[k] : 0.0;
        for (int64_t c = 0; c < p.Cg; ++c)
          for (int64_t t = 0; t < p.kvol; ++t) {
            const int64_t off = tap_input(p, pos, t);
            if (off < 0) continue;
            const int64_t xi = (n * p.C + g * p.Cg + c) * p.in_plane + off;
            const int64_t wi = k * p.R + c * p.kvol + t;
            acc += w[wi] * x[xi];
            r.dx[xi] += w[wi] * dy[yi];
            r.dw[wi] += x[xi] * dy[yi];
          }
        r.y[yi] = acc;
      }
    }
  return r;
}

std::mt19937_64 rng(12345);

std::vector<double> randn(int64_t n) {
  std::normal_distribution<double> dist;
  std::vector<double> v(n);
  for (auto& e : v) e = dist(rng);
  return v;
}

int64_t rand_int(int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

int failures = 0;

template <typename T>
void compare(const char* what, const std::string& ctx, const std::vector<T>& got,
             const std::vector<double>& want, double tol) {
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = static_cast<double>(got[i]);
    if (!(std::fabs(g - want[i]) <= tol * (1 + std::fabs(want[i])))) {
      std::printf("FAIL %s [%s] at %zu: got %.17g want %.17g\n", what, ctx.c_str(), i, g, want[i]);
      ++failures;
      return;
    }
  }
}

template <typename T, typename U>
std::vector<T> cast(const std::vector<U>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
void run_case(const Case& c, ConvPath path, bool with_bias) {
  const ConvParams p = params_of(c);
  conv_path_override() = path;
  const std::string ctx = describe(c) + " path" + std::to_string(int(path)) +
                          (sizeof(T) == 4 ? " f32" : " f64");
  const auto x = randn(p.N * p.C * p.in_plane), w = randn(p.K * p.R), b = randn(p.K),
             dy = randn(p.N * p.K * p.out_plane);
  // Inputs rounded to T first, so the only difference left is the summation rounding.
  const auto xt = cast<T>(x), wt = cast<T>(w), bt = cast<T>(b), dyt = cast<T>(dy);
  const std::vector<double> b64 = cast<double>(bt);
  const Reference exact = reference(p, cast<double>(xt), cast<double>(wt),
                                    with_bias ? &b64 : nullptr, cast<double>(dyt));
  const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-12) * std::sqrt(double(p.R + p.N * p.out_plane + p.Kg * p.kvol));
  const T nan = std::nan("");
  emu::Launcher launch;
  {
    emu::Workspace ws;
    std::vector<T> y(p.N * p.K * p.out_plane, nan);
    conv_forward_run<T>(p, xt.data(), wt.data(), with_bias ? bt.data() : nullptr, y.data(), ws,
                        launch);
    compare("forward", ctx, y, exact.y, tol);
  }
  {
    emu::Workspace ws;
    std::vector<T> dx(p.N * p.C * p.in_plane, nan);
    conv_backward_input_run<T>(p, dyt.data(), wt.data(), dx.data(), ws, launch);
    compare("backward_input", ctx, dx, exact.dx, tol);
  }
  {
    emu::Workspace ws;
    std::vector<T> dw(p.K * p.R, nan);
    conv_backward_weight_run<T>(p, xt.data(), dyt.data(), dw.data(), ws, launch);
    compare("backward_weight", ctx, dw, exact.dw, tol);
  }
}

template <typename T>
void run_im2col(const Case& c) {
  Case u = c;
  u.K = u.C;
  u.G = 1;
  const ConvParams p = params_of(u);
  const std::string ctx = describe(u) + (sizeof(T) == 4 ? " f32" : " f64");
  const auto x = cast<T>(randn(p.N * p.C * p.in_plane));
  const auto cols_in = cast<T>(randn(p.N * p.R * p.out_plane));
  std::vector<double> want_cols(p.N * p.R * p.out_plane, 0), want_img(p.N * p.C * p.in_plane, 0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t t = 0; t < p.kvol; ++t)
        for (int64_t l = 0; l < p.out_plane; ++l) {
          const int64_t off = tap_input(p, l, t);
          const int64_t ci = ((n * p.C + c) * p.kvol + t) * p.out_plane + l;
          if (off < 0) continue;
          want_cols[ci] = x[(n * p.C + c) * p.in_plane + off];
          want_img[(n * p.C + c) * p.in_plane + off] += cols_in[ci];
        }
  const T nan = std::nan("");
  emu::Launcher launch;
  std::vector<T> cols(p.N * p.R * p.out_plane, nan), img(p.N * p.C * p.in_plane, nan);
  im2col_run<T>(p, x.data(), cols.data(), launch);
  col2im_run<T>(p, cols_in.data(), img.data(), launch);
  compare("im2col", ctx, cols, want_cols, 0);
  compare("col2im", ctx, img, want_img, sizeof(T) == 4 ? 1e-5 : 1e-13);
}

Case random_case(int dims, int64_t max_c, int64_t max_size) {
  Case c;
  c.G = rand_int(1, 3);
  const bool depthwise = rand_int(0, 5) == 0;
  c.C = c.G * (depthwise ? 1 : rand_int(1, max_c));
  c.K = c.G * rand_int(1, max_c);
  c.N = rand_int(1, 3);
  for (int d = 0; d < dims; ++d) {
    const int64_t k = rand_int(1, 3), dil = rand_int(1, 2), s = rand_int(1, 3);
    const int64_t reach = dil * (k - 1);
    c.kernel.push_back(k);
    c.dil.push_back(dil);
    c.stride.push_back(s);
    c.pb.push_back(rand_int(0, reach));
    c.pa.push_back(rand_int(0, reach));
    c.in.push_back(rand_int(std::max<int64_t>(1, reach + 1 - c.pb[d] - c.pa[d]), max_size));
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 12;
  std::vector<Case> cases;
  // Fixed cases: a tail-heavy 2-D layer through the large tile, 1x1, a 4-D and an 8-D conv.
  cases.push_back({2, 20, 136, 1, {9, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}});
  cases.push_back({3, 16, 24, 2, {5, 6}, {1, 1}, {2, 1}, {0, 0}, {0, 0}, {1, 1}});
  cases.push_back({2, 4, 6, 2, {5, 4, 6, 3}, {2, 3, 2, 2}, {1, 2, 1, 2}, {1, 0, 1, 0},
                   {0, 2, 1, 1}, {2, 1, 1, 1}});
  cases.push_back({1, 3, 9, 1, {2, 1, 2, 1, 2, 1, 2, 3}, {2, 1, 1, 1, 2, 1, 1, 2},
                   {1, 1, 1, 1, 1, 1, 1, 2}, {0, 0, 0, 0, 1, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 0, 0},
                   {1, 1, 1, 1, 1, 1, 1, 1}});
  for (int i = 0; i < count; ++i) cases.push_back(random_case(1 + i % 3, i % 2 ? 12 : 3, 9));
  const ConvPath paths[] = {ConvPath::kAuto, ConvPath::kGemm, ConvPath::kGemmWide,
                            ConvPath::kGemmLarge, ConvPath::kDirect};
  // Optional [first, last) case range, e.g. to keep a ThreadSanitizer run short.
  const size_t first = argc > 2 ? std::atoi(argv[2]) : 0;
  const size_t last = argc > 3 ? std::min<size_t>(std::atoi(argv[3]), cases.size()) : cases.size();
  for (size_t i = first; i < last; ++i) {
    for (ConvPath path : paths) {
      // Every emulated __syncthreads wakes 256 host threads: keep the block-per-element
      // direct weight gradient to small layers.
      const ConvParams p = params_of(cases[i]);
      if (path == ConvPath::kDirect && p.K * p.R > 4000) continue;
      run_case<double>(cases[i], path, i % 2 == 0);
      run_case<float>(cases[i], path, i % 2 == 1);
    }
    run_im2col<double>(cases[i]);
    run_im2col<float>(cases[i]);
    std::printf("case %zu done (%s), failures so far %d\n", i, describe(cases[i]).c_str(),
                failures);
    std::fflush(stdout);
  }
  std::printf("%d launches, %d failures\n", emu::launches, failures);
  return failures == 0 ? 0 : 1;
}
