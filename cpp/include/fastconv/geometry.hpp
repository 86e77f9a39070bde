// The one description of a sliding-window operation, shared by convolution, im2col,
// col2im and pooling. Every size is int64; every check that protects an index lives in
// make_window_geom, so kernels may index without re-validating.
#pragma once

#include <cstdint>
#include <vector>

namespace fastconv {

// Upper bound on any extent, stride, pad, dilation and dilated kernel reach: sums of a few
// such values cannot overflow, and products of two are formed only through checked_mul,
// so index arithmetic never wraps.
constexpr int64_t kMaxExtent = int64_t(1) << 60;

// a * b, or std::invalid_argument naming `what` if the product leaves int64.
int64_t checked_mul(int64_t a, int64_t b, const char* what);

// The shared output-size formula, for one spatial dim:
//   floor((n + pad_before + pad_after - dilation*(kernel-1) - 1) / stride) + 1
// With ceil_mode the division rounds up, and a last window that would start inside the
// end padding (at or past n + pad_before in padded coordinates) is dropped, as PyTorch.
// Returns a value < 1 when the dilated kernel does not fit in the padded input.
int64_t output_length(int64_t n, int64_t kernel, int64_t stride, int64_t pad_before,
                      int64_t pad_after, int64_t dilation, bool ceil_mode);

// How large a padding may be on either side of one dim.
enum class PadLimit {
  kConv,  // at most dilation*(kernel-1): some window still touches the input
  kPool,  // at most kernel/2, as PyTorch: every window holds at least one input cell
};

struct WindowGeom {
  int64_t batch = 0;     // N
  int64_t channels = 0;  // C of the input
  // One entry per spatial dim.
  std::vector<int64_t> in;          // input extent
  std::vector<int64_t> kernel;      // window extent, before dilation
  std::vector<int64_t> out;         // number of windows
  std::vector<int64_t> stride;      // step between windows
  std::vector<int64_t> pad_before;  // implicit cells before the first input cell
  std::vector<int64_t> pad_after;   // implicit cells after the last input cell
  std::vector<int64_t> dilation;    // step between taps of one window

  int64_t dims() const { return static_cast<int64_t>(in.size()); }
  int64_t in_plane() const;       // prod(in)
  int64_t out_plane() const;      // prod(out), the L of im2col
  int64_t kernel_volume() const;  // prod(kernel)
  bool unit_strides() const;      // every stride 1
};

// Validates every parameter (lengths, ranges, padding limit, fit, overflow of the
// element counts) and fills `out`. `op` prefixes error messages.
WindowGeom make_window_geom(const char* op, int64_t batch, int64_t channels,
                            const std::vector<int64_t>& in, const std::vector<int64_t>& kernel,
                            const std::vector<int64_t>& stride,
                            const std::vector<int64_t>& pad_before,
                            const std::vector<int64_t>& pad_after,
                            const std::vector<int64_t>& dilation, bool ceil_mode,
                            PadLimit pad_limit);

// A convolution's geometry: the sliding window plus channels and groups. Shared by the CPU
// and CUDA modules so both validate identically.
struct ConvGeom {
  WindowGeom win;          // input (N, C, *in) against kernel (*kernel)
  int64_t out_channels;    // K
  int64_t groups;          // G
  int64_t group_in;        // Cg = C / G
  int64_t group_out;       // Kg = K / G
  int64_t rows;            // R = Cg * prod(kernel)
  int64_t positions;       // L = prod(out)
  int64_t in_plane;        // prod(in)
  // A 1x1 kernel with unit stride and no padding reads the input as its own column matrix.
  bool pointwise;

  std::vector<int64_t> out_shape() const {
    std::vector<int64_t> s{win.batch, out_channels};
    s.insert(s.end(), win.out.begin(), win.out.end());
    return s;
  }
};

// Validates shapes (x (N, C, *in), w (K, C/groups, *kernel)), groups and the window, with
// element counts checked against int64 overflow. `op` prefixes error messages.
ConvGeom make_conv_geom(const char* op, const std::vector<int64_t>& x_shape,
                        const std::vector<int64_t>& w_shape, const std::vector<int64_t>& stride,
                        const std::vector<int64_t>& pad_before,
                        const std::vector<int64_t>& pad_after,
                        const std::vector<int64_t>& dilation, int64_t groups);

// The window geometry of an image (N, C, *spatial) as im2col and col2im read it (the
// convolution padding limit), after checking that the shape has a spatial dim.
WindowGeom make_image_geom(const char* op, const std::vector<int64_t>& image_shape,
                           const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                           const std::vector<int64_t>& pad_before,
                           const std::vector<int64_t>& pad_after,
                           const std::vector<int64_t>& dilation);

// The shapes max_pool_backward scatters between: dy (N, C, *out) into dx (N, C, *in).
struct ScatterPlanes {
  int64_t planes;     // N * C
  int64_t in_plane;   // prod(in): the range of a flat index
  int64_t out_plane;  // prod(out)
};

// Checks dy and dx agree in rank, N and C and have no zero-size dim, with every count
// checked against int64 overflow.
ScatterPlanes make_scatter_planes(const char* op, const std::vector<int64_t>& dy_shape,
                                  const std::vector<int64_t>& dx_shape);

}  // namespace fastconv
