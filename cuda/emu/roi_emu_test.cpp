// Runs the CUDA RoI kernels (fastconv_cuda/roi_kernels.cuh) under the host emulation
// (cuda_emu.hpp) against naive loops written from torchvision's algorithm (per roi, bin,
// sample and corner; extended to 3-D with trilinear corners), over random 2-D and 3-D
// rois that spill past the borders, every option (adaptive and fixed sampling, aligned,
// spatial_scale), both dtypes: RoI align forward and backward (plus bitwise repeatability of
// the backward gather), RoI pool forward (values and indices exactly) and backward (the
// sort keys, a host stable sort standing in for the radix sort, and the run sums, exactly),
// and the row checks of the prepare kernels. Build and run:
//   g++ -std=c++20 -O1 -g -fsanitize=address,undefined -I cuda/include -I cpp/include
//       cuda/emu/roi_emu_test.cpp cpp/geometry.cpp -o /tmp/roi_emu && /tmp/roi_emu
// Argument: [random cases]. Exit status 0 when every case passes.
#include "cuda_emu.hpp"
// The emulation must come first: the kernel headers use its keywords.
#include "fastconv_cuda/roi_kernels.cuh"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

using namespace fastconv::cuda;
using fastconv::RoiGeom;

namespace {


struct Case {
  int dims;
  int64_t N, C, R;
  std::vector<int64_t> in, out;  // per spatial dim, the first spatial dim first
  double scale;
  int64_t ratio;
  bool aligned;
};

std::string describe(const Case& c) {
  auto v = [](const std::vector<int64_t>& a) {
    std::string s = "(";
    for (auto x : a) s += std::to_string(x) + ",";
    return s + ")";
  };
  return std::to_string(c.dims) + "-D N" + std::to_string(c.N) + " C" + std::to_string(c.C) +
         " R" + std::to_string(c.R) + " in" + v(c.in) + " out" + v(c.out) + " scale " +
         std::to_string(c.scale) + " ratio " + std::to_string(c.ratio) +
         (c.aligned ? " aligned" : "");
}

RoiGeom geom_of(const Case& c) {
  std::vector<int64_t> x_shape{c.N, c.C};
  x_shape.insert(x_shape.end(), c.in.begin(), c.in.end());
  return fastconv::make_roi_geom("emu", x_shape, "x", {c.R, 1 + 2 * c.dims}, c.out);
}

using emu::expect;
using emu::failures;
using emu::same_bits;

// ---------------------------------------------------------------------------------------
// Naive loops: torchvision's roi_align / roi_pool, one axis written out at a time
// ---------------------------------------------------------------------------------------

// Axis d (0 = first spatial dim) of a roi row: its columns are 1 + (dims - 1 - d) and that
// plus dims.
template <typename T>
struct NaiveAxis {
  T start, bin;
  int64_t grid, size, bins;
};

template <typename T>
NaiveAxis<T> naive_axis(const Case& c, const T* row, int d) {
  const int64_t col = 1 + (c.dims - 1 - d);
  const T offset = c.aligned ? T(0.5) : T(0);
  const T s = static_cast<T>(c.scale);
  NaiveAxis<T> a;
  a.start = row[col] * s - offset;
  T length = (row[col + c.dims] * s - offset) - a.start;
  if (!c.aligned) length = std::max(length, T(1));
  a.bin = length / static_cast<T>(c.out[d]);
  a.grid = c.ratio > 0 ? c.ratio : static_cast<int64_t>(std::ceil(length / T(c.out[d])));
  a.size = c.in[d];
  a.bins = c.out[d];
  return a;
}

// The corners of sample i of bin p: false when outside [-1, size].
template <typename T>
bool naive_sample(const NaiveAxis<T>& a, int64_t p, int64_t i, int64_t* cell, T* w) {
  T y = a.start + static_cast<T>(p) * a.bin +
        static_cast<T>(static_cast<float>(i) + .5f) * a.bin / static_cast<T>(a.grid);
  if (y < -1.0 || y > static_cast<T>(a.size)) return false;
  if (y <= 0) y = 0;
  int64_t lo = static_cast<int64_t>(y), hi;
  if (lo >= a.size - 1) {
    hi = lo = a.size - 1;
    y = static_cast<T>(lo);
  } else {
    hi = lo + 1;
  }
  const T l = y - static_cast<T>(lo);
  cell[0] = lo, cell[1] = hi;
  w[0] = T(1) - l, w[1] = l;
  return true;
}

// Calls f(flat bin, cell offset in the plane, weight, count) for every corner of every sample
// of every bin of roi r (in torchvision's order).
template <typename T, typename F>
void for_corners(const Case& c, const T* row, F f) {
  std::vector<NaiveAxis<T>> axes;
  for (int d = 0; d < c.dims; ++d) axes.push_back(naive_axis(c, row, d));
  int64_t count = 1;
  for (auto& a : axes) count *= a.grid;
  const T cnt = static_cast<T>(std::max<int64_t>(count, 1));
  const int64_t bins = std::accumulate(c.out.begin(), c.out.end(), int64_t(1),
                                       std::multiplies<int64_t>());
  for (int64_t bin = 0; bin < bins; ++bin) {
    int64_t p[3], rest = bin;
    for (int d = c.dims - 1; d >= 0; --d) {
      p[d] = rest % c.out[d];
      rest /= c.out[d];
    }
    int64_t samples = 1;
    for (auto& a : axes) samples *= a.grid;
    for (int64_t s = 0; s < samples; ++s) {
      int64_t i[3], left = s;
      for (int d = c.dims - 1; d >= 0; --d) {
        i[d] = left % axes[d].grid;
        left /= axes[d].grid;
      }
      int64_t cells[3][2];
      T w[3][2];
      bool valid = true;
      for (int d = 0; d < c.dims; ++d) valid &= naive_sample(axes[d], p[d], i[d], cells[d], w[d]);
      if (!valid) continue;
      for (int corner = 0; corner < (1 << c.dims); ++corner) {
        int64_t off = 0;
        T weight = T(1);
        for (int d = 0; d < c.dims; ++d) {
          const int bit = (corner >> (c.dims - 1 - d)) & 1;
          off = off * c.in[d] + cells[d][bit];
          weight = weight * w[d][bit];
        }
        f(bin, off, weight, cnt);
      }
    }
  }
}

template <typename T>
T* dev_copy(emu::Workspace& ws, const std::vector<T>& v) {
  T* p = ws.get<T>(static_cast<int64_t>(v.size()));
  std::copy(v.begin(), v.end(), p);
  return p;
}

template <typename T>
void run_case(const Case& c, std::mt19937_64& rng) {
  const RoiGeom g = geom_of(c);
  const int64_t plane = g.plane(), bins = g.bins(), width = g.row_width();
  std::normal_distribution<double> normal;
  std::vector<T> x(c.N * c.C * plane), rois(c.R * width), dy(c.R * c.C * bins);
  for (auto& v : x) v = static_cast<T>(normal(rng));
  for (auto& v : dy) v = static_cast<T>(normal(rng));
  for (int64_t r = 0; r < c.R; ++r) {
    T* row = rois.data() + r * width;
    row[0] = static_cast<T>(std::uniform_int_distribution<int64_t>(0, c.N - 1)(rng));
    for (int d = 0; d < c.dims; ++d) {
      const double extent = c.in[d] / c.scale;
      std::uniform_real_distribution<double> at(-0.3 * extent, 1.3 * extent);
      double a = at(rng), b = at(rng);
      if (a > b) std::swap(a, b);
      if (r % 7 == 3) b = a + 0.01 * (b - a);  // thinner than a cell
      const int64_t col = 1 + (c.dims - 1 - d);
      row[col] = static_cast<T>(a);
      row[col + c.dims] = static_cast<T>(b);
    }
  }
  emu::Launcher launch;
  emu::Workspace ws;
  const T scale = static_cast<T>(c.scale);
  long long* status = ws.get<long long>(2);

  // RoI align forward.
  std::vector<T> y(c.R * c.C * bins, T(-7));
  roi_align_forward_run<T>(g, x.data(), rois.data(), scale, c.aligned, c.ratio, y.data(), status,
                           ws, launch);
  expect<T>(status[0] >= c.R, c, "align status", 0, double(status[0]), double(c.R));
  std::vector<double> want(y.size(), 0.0), scale_of(y.size(), 0.0);
  std::vector<double> want_dx(x.size(), 0.0);
  for (int64_t r = 0; r < c.R; ++r) {
    const T* row = rois.data() + r * width;
    const int64_t n = static_cast<int64_t>(row[0]);
    for_corners<T>(c, row, [&](int64_t bin, int64_t off, T w, T cnt) {
      for (int64_t ch = 0; ch < c.C; ++ch) {
        const int64_t o = (r * c.C + ch) * bins + bin;
        const double v = double(w) * double(x[(n * c.C + ch) * plane + off]);
        want[o] += v / double(cnt);
        scale_of[o] += std::fabs(v) / double(cnt);
        want_dx[(n * c.C + ch) * plane + off] += double(dy[o]) * double(w) / double(cnt);
      }
    });
  }
  const double eps = sizeof(T) == 4 ? 2e-6 : 1e-14;
  for (size_t i = 0; i < y.size(); ++i) {
    expect<T>(std::fabs(y[i] - want[i]) <= eps * (scale_of[i] + 1), c, "align forward",
              static_cast<int64_t>(i), y[i], want[i]);
  }

  // RoI align backward (the gather), twice: the same bits.
  std::vector<T> dx(x.size(), T(-7)), again(x.size(), T(-9));
  roi_align_backward_run<T>(g, dy.data(), rois.data(), scale, c.aligned, c.ratio, dx.data(),
                            status, ws, launch);
  roi_align_backward_run<T>(g, dy.data(), rois.data(), scale, c.aligned, c.ratio, again.data(),
                            status, ws, launch);
  double dx_scale = 0;
  for (double v : want_dx) dx_scale = std::max(dx_scale, std::fabs(v));
  for (size_t i = 0; i < dx.size(); ++i) {
    expect<T>(std::fabs(dx[i] - want_dx[i]) <= eps * 8 * (dx_scale + 1), c, "align backward",
              static_cast<int64_t>(i), dx[i], want_dx[i]);
    expect<T>(same_bits(dx[i], again[i]), c, "align backward repeat", static_cast<int64_t>(i),
              dx[i], again[i]);
  }

  // RoI pool forward: few distinct values, so ties decide winners.
  std::uniform_int_distribution<int> small(-3, 3);
  for (auto& v : x) v = static_cast<T>(small(rng));
  std::vector<T> p(y.size(), T(-7));
  std::vector<int64_t> at(y.size(), -7);
  roi_pool_forward_run<T>(g, x.data(), rois.data(), scale, p.data(), at.data(), status, ws,
                          launch);
  const T floor = static_cast<T>(-3.402823466e38f);
  for (int64_t r = 0; r < c.R; ++r) {
    const T* row = rois.data() + r * width;
    const int64_t n = static_cast<int64_t>(row[0]);
    int64_t lo[3], hi[3];
    double bin_size[3];
    for (int d = 0; d < c.dims; ++d) {
      const int64_t col = 1 + (c.dims - 1 - d);
      lo[d] = static_cast<int64_t>(std::round(row[col] * scale));  // half away from zero
      hi[d] = static_cast<int64_t>(std::round(row[col + c.dims] * scale));
      bin_size[d] = double(static_cast<T>(std::max<int64_t>(hi[d] - lo[d] + 1, 1)) /
                           static_cast<T>(c.out[d]));
    }
    for (int64_t bin = 0; bin < bins; ++bin) {
      int64_t s[3], e[3], rest = bin;
      bool empty = false;
      for (int d = c.dims - 1; d >= 0; --d) {
        const int64_t q = rest % c.out[d];
        rest /= c.out[d];
        const T b = static_cast<T>(bin_size[d]);
        s[d] = std::clamp<int64_t>(
            static_cast<int64_t>(std::floor(static_cast<T>(q) * b)) + lo[d], 0, c.in[d]);
        e[d] = std::clamp<int64_t>(
            static_cast<int64_t>(std::ceil(static_cast<T>(q + 1) * b)) + lo[d], 0, c.in[d]);
        empty |= e[d] <= s[d];
      }
      for (int64_t ch = 0; ch < c.C; ++ch) {
        T best = empty ? T(0) : floor;
        int64_t where = -1;
        if (!empty) {
          std::vector<int64_t> cur(s, s + c.dims);
          while (true) {
            int64_t off = 0;
            for (int d = 0; d < c.dims; ++d) off = off * c.in[d] + cur[d];
            const T v = x[(n * c.C + ch) * plane + off];
            if (v > best) best = v, where = off;
            int d = c.dims - 1;
            while (d >= 0 && ++cur[d] == e[d]) cur[d] = s[d], --d;
            if (d < 0) break;
          }
        }
        const int64_t o = (r * c.C + ch) * bins + bin;
        expect<T>(same_bits(p[o], best), c, "pool value", o, p[o], best);
        expect<T>(at[o] == where, c, "pool index", o, double(at[o]), double(where));
      }
    }
  }

  // RoI pool backward: keys, a stable sort by key, run sums -- against the ordered scatter.
  const int64_t count = c.R * c.C * bins, dx_size = c.N * c.C * plane;
  std::vector<uint64_t> keys(count);
  std::vector<int64_t> values(count);
  roi_pool_backward_keys_run<T>(g, rois.data(), at.data(), keys.data(), values.data(), status,
                                ws, launch);
  expect<T>(status[0] >= c.R && status[1] >= count, c, "pool backward status", 0,
            double(status[1]), double(count));
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  std::vector<uint64_t> sorted_keys(count);
  std::vector<int64_t> sorted_values(count);
  for (int64_t i = 0; i < count; ++i) {
    sorted_keys[i] = keys[order[i]];
    sorted_values[i] = values[order[i]];
  }
  std::vector<T> pdx(x.size(), T(0)), want_pdx(x.size(), T(0));
  if (count > 0) {
    launch(&roi_sum_runs_kernel<T>, blocks_for(count),
           static_cast<const uint64_t*>(sorted_keys.data()),
           static_cast<const int64_t*>(sorted_values.data()), count,
           static_cast<uint64_t>(dx_size), static_cast<const T*>(dy.data()), pdx.data());
  }
  for (int64_t r = 0; r < c.R; ++r) {
    const int64_t n = static_cast<int64_t>(rois[r * width]);
    for (int64_t ch = 0; ch < c.C; ++ch) {
      for (int64_t bin = 0; bin < bins; ++bin) {
        const int64_t o = (r * c.C + ch) * bins + bin;
        if (at[o] >= 0) want_pdx[(n * c.C + ch) * plane + at[o]] += dy[o];
      }
    }
  }
  for (size_t i = 0; i < pdx.size(); ++i) {
    expect<T>(same_bits(pdx[i], want_pdx[i]), c, "pool backward", static_cast<int64_t>(i),
              pdx[i], want_pdx[i]);
  }

  // Row checks: a bad row is reported (the smallest), and never read.
  if (c.R >= 2) {
    std::vector<T> bad = rois;
    bad[1 * width] = T(0.5);           // batch index not an integer
    bad[0 * width + 1] = T(NAN);       // a NaN coordinate
    roi_align_forward_run<T>(g, x.data(), bad.data(), scale, c.aligned, c.ratio, y.data(), status,
                             ws, launch);
    expect<T>(status[0] == 0, c, "first bad row", 0, double(status[0]), 0);
    bad[0 * width + 1] = rois[1];
    bad[0 * width + 1 + c.dims] = rois[1] - T(1);  // inverted along x
    roi_pool_forward_run<T>(g, x.data(), bad.data(), scale, p.data(), at.data(), status, ws,
                            launch);
    expect<T>(status[0] == 0, c, "inverted row", 0, double(status[0]), 0);
    bad[0 * width + 1 + c.dims] = rois[1 + c.dims];
    roi_align_backward_run<T>(g, dy.data(), bad.data(), scale, c.aligned, c.ratio, dx.data(),
                              status, ws, launch);
    expect<T>(status[0] == 1, c, "non-integer batch index", 1, double(status[0]), 1);
  }
}

int64_t pick(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

Case random_case(std::mt19937_64& rng) {
  Case c;
  c.dims = static_cast<int>(pick(rng, 2, 3));
  c.N = pick(rng, 1, 2);
  c.C = pick(rng, 1, 3);
  c.R = pick(rng, 0, 6);
  for (int d = 0; d < c.dims; ++d) {
    c.in.push_back(pick(rng, 1, c.dims == 3 ? 5 : 9));
    c.out.push_back(pick(rng, 1, 3));
  }
  const double scales[] = {1.0, 0.5, 0.25, 1.5};
  c.scale = scales[pick(rng, 0, 3)];
  c.ratio = pick(rng, -1, 3);
  c.aligned = pick(rng, 0, 1) == 1;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 20;
  std::mt19937_64 rng(1234);
  std::vector<Case> cases;
  // Fixed cases: the Faster R-CNN head in miniature, an adaptive grid, a 3-D volume.
  cases.push_back({2, 2, 3, 8, {7, 9}, {3, 3}, 0.5, 2, true});
  cases.push_back({2, 1, 2, 5, {6, 5}, {2, 2}, 1.0, -1, false});
  cases.push_back({3, 1, 2, 4, {3, 4, 5}, {2, 2, 2}, 1.0, 2, false});
  for (int i = 0; i < count; ++i) cases.push_back(random_case(rng));
  for (size_t i = 0; i < cases.size(); ++i) {
    run_case<float>(cases[i], rng);
    run_case<double>(cases[i], rng);
  }
  std::printf("%zu cases, %d launches, %d failures\n", cases.size(), emu::launches, failures);
  return failures == 0 ? 0 : 1;
}
