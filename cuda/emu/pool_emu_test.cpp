// Runs the CUDA pooling kernels (fastconv_cuda/pool_kernels.cuh) under the host emulation
// (cuda_emu.hpp) against naive loops in the CPU kernels' order, over random 1-D to 4-D
// windows (strides, padding up to kernel/2, ceil_mode), both dtypes: max values and winner
// positions and the average forward and adjoint bit for bit, plus the max adjoint's hit
// counting and single-hit stores. Build and run:
//   g++ -std=c++20 -O1 -g -fsanitize=address,undefined -I cuda/include -I cpp/include
//       cuda/emu/pool_emu_test.cpp cpp/geometry.cpp -o /tmp/pool_emu && /tmp/pool_emu
// Argument: [random cases]. Exit status 0 when every case passes.
#include "cuda_emu.hpp"
// The emulation must come first: the kernel headers use its keywords.
#include "fastconv_cuda/pool_kernels.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace fastconv::cuda;
using fastconv::WindowGeom;

namespace {


struct Case {
  int64_t N, C;
  std::vector<int64_t> in, kernel, stride, pb, pa;
  bool ceil_mode;
};

std::string describe(const Case& c) {
  auto v = [](const std::vector<int64_t>& a) {
    std::string s = "(";
    for (auto x : a) s += std::to_string(x) + ",";
    return s + ")";
  };
  return "N" + std::to_string(c.N) + " C" + std::to_string(c.C) + " in" + v(c.in) + " k" +
         v(c.kernel) + " s" + v(c.stride) + " pb" + v(c.pb) + " pa" + v(c.pa) +
         (c.ceil_mode ? " ceil" : "");
}

WindowGeom geom_of(const Case& c) {
  return fastconv::make_window_geom("emu", c.N, c.C, c.in, c.kernel, c.stride, c.pb, c.pa,
                                    std::vector<int64_t>(c.in.size(), 1), c.ceil_mode,
                                    fastconv::PadLimit::kPool);
}

// Row-major coordinates of `flat` in `extent`.
std::vector<int64_t> coords(int64_t flat, const std::vector<int64_t>& extent) {
  std::vector<int64_t> c(extent.size());
  for (int64_t d = static_cast<int64_t>(extent.size()) - 1; d >= 0; --d) {
    c[d] = flat % extent[d];
    flat /= extent[d];
  }
  return c;
}

// The window of output `o` per dim: input cells [lo, hi) and the divisor count.
void window(const WindowGeom& g, const std::vector<int64_t>& o, bool include_pad,
            std::vector<int64_t>& lo, std::vector<int64_t>& hi, int64_t& count) {
  count = 1;
  for (size_t d = 0; d < o.size(); ++d) {
    const int64_t start = o[d] * g.stride[d] - g.pad_before[d];
    lo[d] = std::max<int64_t>(start, 0);
    hi[d] = std::min(start + g.kernel[d], g.in[d]);
    count *= include_pad ? std::min(start + g.kernel[d], g.in[d] + g.pad_after[d]) - start
                         : hi[d] - lo[d];
  }
}

// Visits the box [lo, hi) in row-major order.
template <typename F>
void for_box(const std::vector<int64_t>& lo, const std::vector<int64_t>& hi, F f) {
  std::vector<int64_t> cur = lo;
  for (size_t d = 0; d < lo.size(); ++d)
    if (lo[d] >= hi[d]) return;
  while (true) {
    f(cur);
    int64_t d = static_cast<int64_t>(cur.size()) - 1;
    while (d >= 0 && ++cur[d] == hi[d]) {
      cur[d] = lo[d];
      --d;
    }
    if (d < 0) return;
  }
}

int64_t offset(const std::vector<int64_t>& c, const std::vector<int64_t>& extent) {
  int64_t off = 0;
  for (size_t d = 0; d < c.size(); ++d) off = off * extent[d] + c[d];
  return off;
}

using emu::expect;
using emu::failures;
using emu::same_bits;

template <typename T>
void run_case(const Case& c, std::mt19937_64& rng) {
  const WindowGeom g = geom_of(c);
  const DeviceWindow w = device_window("emu", g);
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane(), planes = c.N * c.C;
  std::normal_distribution<double> normal;
  std::vector<T> x(planes * in_plane), y(planes * out_plane), dy(planes * out_plane);
  // Few distinct values: ties exercise "the first maximum wins".
  std::uniform_int_distribution<int> small(-3, 3);
  for (auto& v : x) v = static_cast<T>(small(rng));
  for (auto& v : dy) v = static_cast<T>(normal(rng));
  std::vector<int64_t> idx(planes * out_plane);
  emu::Launcher launch;
  max_pool_forward_run<T>(w, x.data(), y.data(), idx.data(), launch);
  std::vector<int64_t> lo(g.in.size()), hi(g.in.size());
  for (int64_t plane = 0; plane < planes; ++plane) {
    for (int64_t j = 0; j < out_plane; ++j) {
      int64_t count = 0;
      window(g, coords(j, g.out), false, lo, hi, count);
      T best = 0;
      int64_t pos = -1;
      for_box(lo, hi, [&](const std::vector<int64_t>& cur) {
        const int64_t at = offset(cur, g.in);
        const T v = x[plane * in_plane + at];
        if (pos < 0 || v > best) {
          best = v;
          pos = at;
        }
      });
      const int64_t t = plane * out_plane + j;
      expect<T>(same_bits(y[t], best), c, "max value", t, y[t], best);
      expect<T>(idx[t] == pos, c, "max index", t, double(idx[t]), double(pos));
    }
  }
  for (bool include_pad : {false, true}) {
    for (auto& v : x) v = static_cast<T>(normal(rng));
    avg_pool_forward_run<T>(w, x.data(), y.data(), include_pad, launch);
    std::vector<T> dx(planes * in_plane, T(-7));
    avg_pool_backward_run<T>(w, dy.data(), dx.data(), include_pad, launch);
    std::vector<double> want_dx(planes * in_plane, 0.0);
    for (int64_t plane = 0; plane < planes; ++plane) {
      for (int64_t j = 0; j < out_plane; ++j) {
        int64_t count = 0;
        window(g, coords(j, g.out), include_pad, lo, hi, count);
        double sum = 0;
        for_box(lo, hi, [&](const std::vector<int64_t>& cur) {
          sum += static_cast<double>(x[plane * in_plane + offset(cur, g.in)]);
        });
        const int64_t t = plane * out_plane + j;
        const T want = static_cast<T>(sum / static_cast<double>(count));
        expect<T>(same_bits(y[t], want), c, "avg value", t, y[t], want);
        for_box(lo, hi, [&](const std::vector<int64_t>& cur) {
          want_dx[plane * in_plane + offset(cur, g.in)] +=
              static_cast<double>(dy[t]) / static_cast<double>(count);
        });
      }
    }
    // The adjoint sums per leading point first: equal up to the rounding of a few terms.
    for (size_t i = 0; i < dx.size(); ++i) {
      const double want = static_cast<T>(want_dx[i]);
      const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-12) * (1 + std::fabs(want));
      expect<T>(std::fabs(dx[i] - want) <= tol, c, "avg adjoint", static_cast<int64_t>(i),
                dx[i], want);
    }
  }
  // max_pool_backward's first two passes: hit counts and the stores of cells hit once.
  const int64_t count = planes * out_plane;
  std::vector<unsigned> hits(planes * in_plane, 0);
  long long status[2] = {count, 0};
  launch(&count_hits_kernel, blocks_for(count), static_cast<const int64_t*>(idx.data()), count,
         out_plane, in_plane, status, hits.data());
  std::vector<unsigned> want_hits(hits.size(), 0);
  for (int64_t j = 0; j < count; ++j) ++want_hits[(j / out_plane) * in_plane + idx[j]];
  expect<T>(hits == want_hits && status[0] == count, c, "max adjoint hits", 0, 0, 0);
  std::vector<T> dx(planes * in_plane, T(0));
  std::vector<uint64_t> keys(count);
  std::vector<int64_t> values(count);
  launch(&store_single_hits_kernel<T>, blocks_for(count), static_cast<const int64_t*>(idx.data()),
         count, out_plane, in_plane, static_cast<const unsigned*>(hits.data()),
         static_cast<const T*>(dy.data()), dx.data(),
         reinterpret_cast<unsigned long long*>(status + 1), keys.data(), values.data());
  int64_t queued = 0;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t cell = (j / out_plane) * in_plane + idx[j];
    if (want_hits[cell] == 1) {
      expect<T>(same_bits(dx[cell], T(0) + dy[j]), c, "max adjoint single hit", j, dx[cell], dy[j]);
    } else {
      ++queued;
    }
  }
  expect<T>(status[1] == queued, c, "max adjoint queue length", 0, double(status[1]),
            double(queued));
}

int64_t pick(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

Case random_case(std::mt19937_64& rng) {
  Case c;
  const int dims = static_cast<int>(pick(rng, 1, 4));
  c.N = pick(rng, 1, 2);
  c.C = pick(rng, 1, 3);
  c.ceil_mode = pick(rng, 0, 1) == 1;
  for (int d = 0; d < dims; ++d) {
    const int64_t k = pick(rng, 1, dims > 2 ? 3 : 4);
    c.kernel.push_back(k);
    c.stride.push_back(pick(rng, 1, 3));
    c.pb.push_back(pick(rng, 0, k / 2));
    c.pa.push_back(pick(rng, 0, k / 2));
    c.in.push_back(pick(rng, std::max<int64_t>(1, k - c.pb[d] - c.pa[d]), dims > 2 ? 5 : 9));
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 40;
  std::mt19937_64 rng(1234);
  std::vector<Case> cases;
  // Fixed cases: overlapping 3x3/2 windows with padding, a ceil_mode overhang, stride 1.
  cases.push_back({2, 3, {7, 8}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false});
  cases.push_back({1, 2, {9}, {3}, {2}, {0}, {1}, true});
  cases.push_back({1, 1, {5, 4, 6}, {2, 2, 3}, {1, 1, 1}, {1, 0, 1}, {0, 1, 1}, false});
  for (int i = 0; i < count; ++i) cases.push_back(random_case(rng));
  for (size_t i = 0; i < cases.size(); ++i) {
    run_case<float>(cases[i], rng);
    run_case<double>(cases[i], rng);
  }
  std::printf("%zu cases, %d launches, %d failures\n", cases.size(), emu::launches, failures);
  return failures == 0 ? 0 : 1;
}
