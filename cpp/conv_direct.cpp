// Direct convolution: when it applies, how a call is cut into jobs, and which instruction-set
// build of simd/conv_direct.inl runs them.
#include "fastconv/conv_direct.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fastconv/gemm.hpp"

namespace fastconv {

namespace {

// Prepared input per job: small enough to stay in L2 while the job sweeps it once per
// output channel of its group.
constexpr int64_t kScratchBytes = int64_t(1) << 18;

// Values per 64 bytes, the widest vector and a cache line. Each prepared row ends with at
// least this many zeros, so a vector chunk may read past the row's end, and rows start on
// cache lines, so that the loads of a row's first tap never straddle two.
template <typename T>
constexpr int64_t kLine = 64 / sizeof(T);

template <typename T>
struct DirectKernels {
  void (*forward)(const DirectConvPlan&, int64_t, int64_t, const T*, const T*, const T*, T*, T*);
  void (*weight_grad)(const DirectConvPlan&, int64_t, int64_t, const T*, const T*, T*, T*);
};

template <typename T>
DirectKernels<T> pick_kernels();

template <>
DirectKernels<float> pick_kernels<float>() {
  return {for_cpu_path(avx512::direct_forward_f32, avx2::direct_forward_f32,
                       baseline::direct_forward_f32),
          for_cpu_path(avx512::direct_weight_grad_f32, avx2::direct_weight_grad_f32,
                       baseline::direct_weight_grad_f32)};
}

template <>
DirectKernels<double> pick_kernels<double>() {
  return {for_cpu_path(avx512::direct_forward_f64, avx2::direct_forward_f64,
                       baseline::direct_forward_f64),
          for_cpu_path(avx512::direct_weight_grad_f64, avx2::direct_weight_grad_f64,
                       baseline::direct_weight_grad_f64)};
}

template <typename T>
const DirectKernels<T>& kernels() {
  static const DirectKernels<T> table = pick_kernels<T>();
  return table;
}

// Scratch values one job needs when it covers `block_rows` outputs of dim 0 (the layout of
// forward_1d / forward_nd in simd/conv_direct.inl).
template <typename T>
int64_t scratch_for(const WindowGeom& g, int64_t group_in, int64_t block_rows, int64_t phases,
                    int64_t* phase_len) {
  const int64_t last = g.dims() - 1;
  auto reach = [&](int64_t e) { return (g.kernel[e] - 1) * g.dilation[e]; };
  const int64_t width = last == 0 ? block_rows : g.out[last];
  *phase_len = (width + reach(last) / g.stride[last] + 2 * kLine<T> - 1) / kLine<T> * kLine<T>;
  int64_t rows = 1;
  for (int64_t e = 0; e < last; ++e) {
    const int64_t outputs = e == 0 ? block_rows : g.out[e];
    const int64_t prepared = (outputs - 1) * g.stride[e] + reach(e) + 1;
    rows *= e == last - 1 ? prepared : e == 0 ? std::min(g.in[0], prepared) : g.in[e];
  }
  return group_in * rows * phases * *phase_len;
}

template <typename T>
DirectConvPlan make_plan(const WindowGeom& g, int64_t out_channels, int64_t groups,
                         int64_t images_per_job) {
  DirectConvPlan p;
  p.win = &g;
  p.out_channels = out_channels;
  p.groups = groups;
  p.group_in = g.channels / groups;
  p.group_out = out_channels / groups;
  p.images_per_job = images_per_job;
  const int64_t last = g.dims() - 1;
  const int64_t stride = g.stride[last], dilation = g.dilation[last];
  p.phases = std::min(stride, (g.kernel[last] - 1) * dilation + 1);

  // Enough jobs to balance the threads when the batch and groups alone do not; in 1-D the
  // blocks cut the only (innermost) dim, so they stay whole multiples of a vector chunk.
  const int64_t threads = omp_get_max_threads();
  const int64_t base_jobs = (g.batch + images_per_job - 1) / images_per_job * groups;
  const int64_t extent = g.out[0];
  const int64_t chunk = last == 0 ? std::min<int64_t>(extent, 64) : 1;
  int64_t rows = extent;
  if (base_jobs < 4 * threads) {
    const int64_t wanted = (4 * threads + base_jobs - 1) / base_jobs;
    rows = std::max(chunk, (extent + wanted - 1) / wanted);
  }
  int64_t phase_len = 0;
  while (rows > chunk &&
         scratch_for<T>(g, p.group_in, rows, p.phases, &phase_len) * int64_t(sizeof(T)) >
             kScratchBytes) {
    rows = std::max(chunk, rows / 2);
  }
  if (last == 0) rows = std::min(extent, (rows + chunk - 1) / chunk * chunk);
  p.block_rows = rows;
  p.blocks = (extent + rows - 1) / rows;
  p.scratch_elems = scratch_for<T>(g, p.group_in, rows, p.phases, &phase_len);
  p.phase_len = phase_len;
  p.plane_kernel = g.dims() == 2 && p.group_in == 1 && g.kernel[0] == g.kernel[1] &&
                   g.kernel[0] <= kMaxPlaneKernel;
  for (int64_t e = 0; e < g.dims(); ++e) {
    p.plane_kernel = p.plane_kernel && g.stride[e] == 1 && g.dilation[e] == 1;
  }
  if (p.plane_kernel) p.scratch_elems = 0;  // plane jobs read the input in place
  p.tap_offset.resize(g.kernel[last]);
  for (int64_t b = 0; b < g.kernel[last]; ++b) {
    p.tap_offset[b] = (b * dilation) % stride * phase_len + (b * dilation) / stride;
  }
  return p;
}

// Inside a parallel region: where this thread's contiguous share of `jobs` begins
// (offset 0) or ends (offset 1), as schedule(static) would cut it.
int64_t thread_share(int64_t jobs, int64_t offset) {
  return jobs * (omp_get_thread_num() + offset) / omp_get_num_threads();
}

// Reused per thread across calls: no per-call allocation or page faults.
template <typename T>
T* scratch(int64_t count) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < count + kLine<T>) buffer.resize(count + kLine<T>);
  const std::uintptr_t past_line = reinterpret_cast<std::uintptr_t>(buffer.data()) % 64;
  return buffer.data() + (past_line == 0 ? 0 : (64 - past_line) / sizeof(T));
}

}  // namespace

// Measured against im2col + GEMM (bench-style medians, float32, 2 threads, AVX-512;
// GEMM time / direct time):
//   group_out 1, depthwise 3x3 / 7x7 / 3x3x3, 28x28 or 16^3:   4.2 / 10 / >10
//   group_out 2-8, group_in 2-16, 3x3 (R = 18..144):           1.4 - 2.9
//   dense C=1, 3x3 on 56x56, K = 4 / 8 / 12 / 16 / 32:         1.6 / 1.0 / 1.0 / 0.9 / 0.8
//   dense C=1 1-D k7, K = 4 / 8 / 16 / 32:                     1.3 / 1.3 / 0.8 / 0.8
//   dense C=1..8 3x3 with K=64; C=3 7x7/2 with K=64:           0.4 - 0.7
// The GEMM's 6-row register tile is what wins once a group has more than 8 output
// channels: it reuses each loaded input for 6 outputs, where the direct kernel loads about
// once per multiply-add. Below that the tile is mostly padding, and the direct kernel wins
// at every reduction length measured (R = C/groups * prod(kernel) up to 144).
// The prepared input also writes out the padding of the last two dims, so layers padded
// far beyond their input (a huge dilation with "same") stay on the GEMM path, which never
// materializes padding.
bool conv_direct_applies(const WindowGeom& win, int64_t out_channels, int64_t groups) {
  const int64_t group_in = win.channels / groups, group_out = out_channels / groups;
  for (int64_t e = 0; e < win.dims(); ++e) {
    if (win.pad_before[e] + win.pad_after[e] > win.in[e] + 64) return false;
  }
  return group_out <= 8 && group_in * win.kernel_volume() <= 160;
}

template <typename T>
void conv_direct_forward(const WindowGeom& win, int64_t out_channels, int64_t groups, const T* x,
                         const T* w, const T* bias, T* y) {
  const DirectConvPlan plan = make_plan<T>(win, out_channels, groups, 1);
  const auto forward = kernels<T>().forward;
  const int64_t jobs = win.batch * groups * plan.blocks;
#pragma omp parallel
  {
    const int64_t first = thread_share(jobs, 0), last = thread_share(jobs, 1);
    if (first < last) forward(plan, first, last, x, w, bias, y, scratch<T>(plan.scratch_elems));
  }
}

bool conv_direct_backward_input_applies(const WindowGeom& win, int64_t out_channels,
                                         int64_t groups) {
  if (!win.unit_strides()) return false;
  // The gradient is a forward convolution with the roles of the channels swapped.
  WindowGeom swapped = win;
  swapped.channels = out_channels;
  return conv_direct_applies(swapped, win.channels, groups);
}

// With unit stride, dx = dy cross-correlated with the flipped kernel over pads
// reach - pad_before / reach - pad_after, with each group's weights transposed
// (K/groups inputs -> C/groups outputs). Both pads stay within [0, reach], since conv's own
// pads do.
template <typename T>
void conv_direct_backward_input(const WindowGeom& win, int64_t out_channels, int64_t groups,
                                const T* dy, const T* w, T* dx) {
  const int64_t dims = win.dims();
  std::vector<int64_t> pad_before(dims), pad_after(dims);
  for (int64_t e = 0; e < dims; ++e) {
    const int64_t reach = (win.kernel[e] - 1) * win.dilation[e];
    pad_before[e] = reach - win.pad_before[e];
    pad_after[e] = reach - win.pad_after[e];
  }
  const WindowGeom grad = make_window_geom("conv_backward_input", win.batch, out_channels,
                                           win.out, win.kernel, win.stride, pad_before,
                                           pad_after, win.dilation, false, PadLimit::kConv);
  const int64_t group_in = win.channels / groups, group_out = out_channels / groups;
  const int64_t taps = win.kernel_volume();
  // Reversing the flat tap index flips every spatial dim at once.
  std::vector<T> flipped(out_channels * group_in * taps);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t k = 0; k < group_out; ++k) {
      for (int64_t c = 0; c < group_in; ++c) {
        const T* src = w + ((g * group_out + k) * group_in + c) * taps;
        T* dst = flipped.data() + ((g * group_in + c) * group_out + k) * taps;
        for (int64_t t = 0; t < taps; ++t) dst[taps - 1 - t] = src[t];
      }
    }
  }
  conv_direct_forward(grad, win.channels, groups, dy, flipped.data(), static_cast<const T*>(nullptr),
                      dx);
}

template void conv_direct_backward_input<float>(const WindowGeom&, int64_t, int64_t,
                                                const float*, const float*, float*);
template void conv_direct_backward_input<double>(const WindowGeom&, int64_t, int64_t,
                                                 const double*, const double*, double*);

bool conv_direct_backward_weight_applies(const WindowGeom& win, int64_t out_channels,
                                          int64_t groups) {
  return conv_direct_applies(win, out_channels, groups);
}

template <typename T>
void conv_direct_backward_weight(const WindowGeom& win, int64_t out_channels, int64_t groups,
                                 const T* x, const T* dy, T* dw) {
  // Images per job: enough jobs for every thread, few enough partial gradients to add.
  const int64_t threads = omp_get_max_threads();
  const int64_t chunks = std::min(win.batch, std::max<int64_t>(1, (4 * threads + groups - 1) / groups));
  const int64_t per_job = (win.batch + chunks - 1) / chunks;
  const DirectConvPlan plan = make_plan<T>(win, out_channels, groups, per_job);
  const auto weight_grad = kernels<T>().weight_grad;
  const int64_t jobs_per_group = (win.batch + per_job - 1) / per_job * plan.blocks;
  const int64_t jobs = jobs_per_group * groups;
  const int64_t group_size = plan.group_out * plan.group_in * win.kernel_volume();
  std::vector<T> partial(jobs * group_size);
#pragma omp parallel
  {
    const int64_t first = thread_share(jobs, 0), last = thread_share(jobs, 1);
    if (first < last) {
      weight_grad(plan, first, last, x, dy, partial.data(), scratch<T>(plan.scratch_elems));
    }
  }
  // Job = (chunk * groups + group) * blocks + block: add each group's partials in job order.
#pragma omp parallel for schedule(static)
  for (int64_t grp = 0; grp < groups; ++grp) {
    T* out = dw + grp * group_size;
    std::fill(out, out + group_size, T(0));
    for (int64_t chunk = 0; chunk < jobs_per_group / plan.blocks; ++chunk) {
      for (int64_t block = 0; block < plan.blocks; ++block) {
        const T* src = partial.data() + ((chunk * groups + grp) * plan.blocks + block) * group_size;
        for (int64_t i = 0; i < group_size; ++i) out[i] += src[i];
      }
    }
  }
}

template void conv_direct_backward_weight<float>(const WindowGeom&, int64_t, int64_t,
                                                 const float*, const float*, float*);
template void conv_direct_backward_weight<double>(const WindowGeom&, int64_t, int64_t,
                                                  const double*, const double*, double*);

template void conv_direct_forward<float>(const WindowGeom&, int64_t, int64_t, const float*,
                                         const float*, const float*, float*);
template void conv_direct_forward<double>(const WindowGeom&, int64_t, int64_t, const double*,
                                          const double*, const double*, double*);

}  // namespace fastconv
