#include "fastconv/geometry.hpp"

#include <algorithm>

#include "fastconv/check.hpp"

namespace fastconv {

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  FC_CHECK(!__builtin_mul_overflow(a, b, &r), what, " overflows 64-bit indexing (", a, " * ", b,
           ")");
  return r;
}

int64_t output_length(int64_t n, int64_t kernel, int64_t stride, int64_t pad_before,
                      int64_t pad_after, int64_t dilation, bool ceil_mode) {
  // Callers bound every argument by kMaxExtent, so these sums fit in int64.
  const int64_t span = n + pad_before + pad_after - dilation * (kernel - 1) - 1;
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? span / stride + (span % stride != 0) : span / stride) + 1;
  if (ceil_mode && (out - 1) >= (n + pad_before + stride - 1) / stride) --out;
  return out;
}

namespace {
int64_t product(const std::vector<int64_t>& v, const char* what) {
  int64_t p = 1;
  for (int64_t x : v) p = checked_mul(p, x, what);
  return p;
}
}  // namespace

int64_t WindowGeom::in_plane() const { return product(in, "input size"); }
int64_t WindowGeom::out_plane() const { return product(out, "output size"); }
int64_t WindowGeom::kernel_volume() const { return product(kernel, "kernel size"); }
bool WindowGeom::unit_strides() const {
  return std::all_of(stride.begin(), stride.end(), [](int64_t s) { return s == 1; });
}

WindowGeom make_window_geom(const char* op, int64_t batch, int64_t channels,
                            const std::vector<int64_t>& in, const std::vector<int64_t>& kernel,
                            const std::vector<int64_t>& stride,
                            const std::vector<int64_t>& pad_before,
                            const std::vector<int64_t>& pad_after,
                            const std::vector<int64_t>& dilation, bool ceil_mode,
                            PadLimit pad_limit) {
  const size_t dims = in.size();
  FC_CHECK(dims >= 1, op, ": need at least one spatial dim, got input spatial size ",
           tuple_str(in));
  const std::pair<const char*, const std::vector<int64_t>*> per_dim[] = {
      {"kernel_size", &kernel}, {"stride", &stride},     {"padding (before)", &pad_before},
      {"padding (after)", &pad_after}, {"dilation", &dilation}};
  for (const auto& [name, values] : per_dim) {
    FC_CHECK(values->size() == dims, op, ": ", name, " has ", values->size(),
             " entries but the input has ", dims, " spatial dims (spatial size ", tuple_str(in),
             ")");
  }
  FC_CHECK(batch >= 1 && batch <= kMaxExtent, op, ": batch size must be positive, got ", batch);
  FC_CHECK(channels >= 1 && channels <= kMaxExtent, op, ": channel count must be positive, got ",
           channels);
  WindowGeom g;
  g.batch = batch;
  g.channels = channels;
  g.in = in;
  g.kernel = kernel;
  g.stride = stride;
  g.pad_before = pad_before;
  g.pad_after = pad_after;
  g.dilation = dilation;
  g.out.resize(dims);
  for (size_t d = 0; d < dims; ++d) {
    FC_CHECK(in[d] >= 1 && in[d] <= kMaxExtent, op, ": input spatial size ", tuple_str(in),
             " must be positive in every dim");
    FC_CHECK(kernel[d] >= 1 && kernel[d] <= kMaxExtent, op, ": kernel_size ", tuple_str(kernel),
             " must be positive in every dim");
    FC_CHECK(stride[d] >= 1 && stride[d] <= kMaxExtent, op, ": stride ", tuple_str(stride),
             " must be positive in every dim");
    FC_CHECK(dilation[d] >= 1 && dilation[d] <= kMaxExtent, op, ": dilation ",
             tuple_str(dilation), " must be positive in every dim");
    FC_CHECK(pad_before[d] >= 0 && pad_after[d] >= 0, op, ": padding ", tuple_str(pad_before),
             " / ", tuple_str(pad_after), " (before / after) must not be negative");
    const int64_t reach = checked_mul(dilation[d], kernel[d] - 1, "dilation * (kernel_size - 1)");
    FC_CHECK(reach <= kMaxExtent, op, ": dilation ", tuple_str(dilation), " * (kernel_size ",
             tuple_str(kernel), " - 1) exceeds ", kMaxExtent);
    const int64_t limit = pad_limit == PadLimit::kConv ? reach : kernel[d] / 2;
    FC_CHECK(pad_before[d] <= limit && pad_after[d] <= limit, op, ": padding ",
             tuple_str(pad_before), " / ", tuple_str(pad_after),
             " (before / after) exceeds the limit of ", limit, " in dim ", d, " for kernel_size ",
             tuple_str(kernel),
             pad_limit == PadLimit::kConv ? " (at most dilation*(kernel_size-1) per side)"
                                          : " (at most kernel_size//2 per side)");
    FC_CHECK(in[d] + pad_before[d] + pad_after[d] >= reach + 1, op, ": kernel_size ",
             tuple_str(kernel), " with dilation ", tuple_str(dilation),
             " is larger than the padded input (spatial size ", tuple_str(in), ", padding ",
             tuple_str(pad_before), " / ", tuple_str(pad_after), ")");
    g.out[d] = output_length(in[d], kernel[d], stride[d], pad_before[d], pad_after[d],
                             dilation[d], ceil_mode);
  }
  // Element counts must fit in int64 as well.
  checked_mul(checked_mul(batch, channels, "input element count"), g.in_plane(),
              "input element count");
  checked_mul(checked_mul(batch, channels, "output element count"), g.out_plane(),
              "output element count");
  checked_mul(channels, g.kernel_volume(), "im2col row count");
  return g;
}

ConvGeom make_conv_geom(const char* op, const std::vector<int64_t>& x_shape,
                        const std::vector<int64_t>& w_shape, const std::vector<int64_t>& stride,
                        const std::vector<int64_t>& pad_before,
                        const std::vector<int64_t>& pad_after,
                        const std::vector<int64_t>& dilation, int64_t groups) {
  using Dims = std::vector<int64_t>;
  FC_CHECK(w_shape.size() >= 3, op, ": weight must be (K, C/groups, *kernel) with at least one "
           "spatial dim, got shape ", tuple_str(w_shape));
  FC_CHECK(x_shape.size() == w_shape.size(), op, ": input shape ", tuple_str(x_shape),
           " must have ", w_shape.size(), " dims to match weight shape ", tuple_str(w_shape));
  FC_CHECK(groups >= 1, op, ": groups must be positive, got ", groups);
  const int64_t C = x_shape[1], K = w_shape[0];
  FC_CHECK(C % groups == 0 && K % groups == 0 && K >= 1, op, ": groups=", groups,
           " must divide the input channels (input shape ", tuple_str(x_shape),
           ") and the output channels (weight shape ", tuple_str(w_shape), ")");
  FC_CHECK(w_shape[1] == C / groups, op, ": weight shape ", tuple_str(w_shape), " needs C/groups = ",
           C / groups, " in dim 1 for input shape ", tuple_str(x_shape), " and groups=", groups);
  ConvGeom g;
  g.win = make_window_geom(op, x_shape[0], C, Dims(x_shape.begin() + 2, x_shape.end()),
                           Dims(w_shape.begin() + 2, w_shape.end()), stride, pad_before,
                           pad_after, dilation, false, PadLimit::kConv);
  g.out_channels = K;
  g.groups = groups;
  g.group_in = C / groups;
  g.group_out = K / groups;
  g.rows = checked_mul(g.group_in, g.win.kernel_volume(), "weight size");
  checked_mul(K, g.rows, "weight size");
  g.positions = g.win.out_plane();
  g.in_plane = g.win.in_plane();
  checked_mul(checked_mul(g.win.batch, K, "output size"), g.positions, "output size");
  g.pointwise = true;
  for (int64_t d = 0; d < g.win.dims(); ++d) {
    g.pointwise = g.pointwise && g.win.kernel[d] == 1 && g.win.stride[d] == 1 &&
                  g.win.pad_before[d] == 0 && g.win.pad_after[d] == 0;
  }
  return g;
}

WindowGeom make_image_geom(const char* op, const std::vector<int64_t>& image_shape,
                           const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                           const std::vector<int64_t>& pad_before,
                           const std::vector<int64_t>& pad_after,
                           const std::vector<int64_t>& dilation) {
  FC_CHECK(image_shape.size() >= 3, op, ": the image must be (N, C, *spatial) with at least one "
           "spatial dim, got shape ", tuple_str(image_shape));
  return make_window_geom(op, image_shape[0], image_shape[1],
                          std::vector<int64_t>(image_shape.begin() + 2, image_shape.end()),
                          kernel, stride, pad_before, pad_after, dilation, false,
                          PadLimit::kConv);
}

ScatterPlanes make_scatter_planes(const char* op, const std::vector<int64_t>& dy_shape,
                                  const std::vector<int64_t>& dx_shape) {
  FC_CHECK(dx_shape.size() >= 3 && dy_shape.size() == dx_shape.size(), op, ": dx shape ",
           tuple_str(dx_shape), " and dy shape ", tuple_str(dy_shape),
           " must both be (N, C, *spatial) with the same number of dims");
  FC_CHECK(dy_shape[0] == dx_shape[0] && dy_shape[1] == dx_shape[1], op, ": dy shape ",
           tuple_str(dy_shape), " and dx shape ", tuple_str(dx_shape), " must agree in N and C");
  for (size_t d = 0; d < dx_shape.size(); ++d) {
    FC_CHECK(dx_shape[d] >= 1 && dy_shape[d] >= 1, op, ": zero-size dim in dy shape ",
             tuple_str(dy_shape), " or dx shape ", tuple_str(dx_shape));
  }
  ScatterPlanes s{checked_mul(dx_shape[0], dx_shape[1], "number of planes"), 1, 1};
  for (size_t d = 2; d < dx_shape.size(); ++d) {
    s.in_plane = checked_mul(s.in_plane, dx_shape[d], "input size");
    s.out_plane = checked_mul(s.out_plane, dy_shape[d], "output size");
  }
  checked_mul(s.planes, s.in_plane, "dx size");
  checked_mul(s.planes, s.out_plane, "dy size");
  return s;
}

}  // namespace fastconv
