// The window traversal behind im2col, col2im and every convolution pass.
//
// Column matrix layout (as torch's unfold): row r = (c - c0) * prod(kernel) + k, where k is
// the kernel offset in row-major order; column l - l0 for output position l in row-major
// order over the output spatial dims. A block covers channels [c0, c1) of one image and
// output positions [l0, l1), so callers can work on tiles of bounded size.
#pragma once

#include <cstdint>

#include "fastconv/geometry.hpp"

namespace fastconv {

// cols[r * ld + (l - l0)] = input value under tap r at position l (0 in the padding).
// `image` points at channel 0 of one image (C x prod(in) values).
template <typename T>
void im2col_block(const WindowGeom& g, const T* image, int64_t c0, int64_t c1, int64_t l0,
                  int64_t l1, T* cols, int64_t ld);

// The adjoint: image[tap r at position l] += cols[r * ld + (l - l0)] for the same block.
// Contributions to one input cell are added in a fixed order (row, then position).
template <typename T>
void col2im_block(const WindowGeom& g, const T* cols, int64_t ld, int64_t c0, int64_t c1,
                  int64_t l0, int64_t l1, T* image);

}  // namespace fastconv
