// The single CUB radix-sort instantiation of fastconv._cuda (see radix_sort.cuh).
#include <cub/device/device_radix_sort.cuh>

#include "radix_sort.cuh"

namespace fastconv::cuda {

void stable_sort_pairs(Workspace& ws, const uint64_t* keys_in, uint64_t* keys_out,
                       const int64_t* values_in, int64_t* values_out, int64_t n, int end_bit,
                       cudaStream_t stream) {
  if (n <= 0) return;
  // First call sizes the temporary storage, second sorts; both are asynchronous.
  size_t temp_bytes = 0;
  FC_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out,
                                                values_in, values_out, n, 0, end_bit, stream));
  void* temp = ws.get<unsigned char>(static_cast<int64_t>(temp_bytes));
  FC_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, values_in,
                                                values_out, n, 0, end_bit, stream));
  FC_LAUNCH_CHECK();
}

}  // namespace fastconv::cuda
