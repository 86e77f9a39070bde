// A host emulation of the few CUDA features the kernel headers (<family>_kernels.cuh) use,
// so their index arithmetic, tile tails, barriers and launch plans can be tested on a
// machine with no GPU: each CUDA thread of a block is a std::thread, __syncthreads is a std::barrier,
// __shared__ arrays are function statics (blocks run one after another), and grids are
// clamped to a few blocks so the grid- and block-stride loops wrap. Built with
// AddressSanitizer (bounds) or ThreadSanitizer (shared-memory races between barriers).
// Testing only: never part of the extension module.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__ __restrict

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* emu_barrier = nullptr;
inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
using std::fma;
using std::fmaf;

// Integer atomics, as CUDA's (they return the old value).
inline long long atomicMin(long long* p, long long v) {
  std::atomic_ref<long long> a(*p);
  long long old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  return std::atomic_ref<unsigned>(*p).fetch_add(v);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}

namespace emu {

inline unsigned max_grid = 3;  // blocks actually run per launch
inline int launches = 0;

struct Launcher {
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), unsigned grid, Args&&... args) const {
    constexpr unsigned threads = 256;
    const unsigned g = std::min(grid, max_grid);
    gridDim = {g, 1, 1};
    blockDim = {threads, 1, 1};
    const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    ++launches;
    for (unsigned b = 0; b < g; ++b) {
      std::barrier<> barrier(threads);
      emu_barrier = &barrier;
      std::vector<std::thread> pool;
      pool.reserve(threads);
      for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, b, t] {
          blockIdx = {b, 0, 0};
          threadIdx = {t, 0, 0};
          std::apply(kernel, params);
        });
      }
      for (auto& th : pool) th.join();
    }
  }
};

// Exact-size blocks (ASan sees any overrun), filled with NaN bytes so a read of an element
// never written shows up in the results.
struct Workspace {
  std::vector<std::shared_ptr<void>> blocks;
  template <typename T>
  T* get(int64_t count) {
    const size_t n = static_cast<size_t>(std::max<int64_t>(1, count));
    std::shared_ptr<T[]> block(new T[n]);
    std::fill(reinterpret_cast<unsigned char*>(block.get()),
              reinterpret_cast<unsigned char*>(block.get() + n), 0xff);
    blocks.push_back(std::shared_ptr<void>(block, block.get()));
    return block.get();
  }
};

// Mismatch reporting shared by the kernel tests: the first 20 failures are printed with
// the case (`describe(c)`, found next to the test's Case type), all are counted.
inline int failures = 0;

inline bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

template <typename T, class Case>
void expect(bool ok, const Case& c, const char* what, int64_t at, double got, double want) {
  if (ok) return;
  ++failures;
  if (failures <= 20) {
    std::printf("FAIL %s (%s) %s at %lld: got %.17g, want %.17g\n", what,
                sizeof(T) == 4 ? "float32" : "float64", describe(c).c_str(),
                static_cast<long long>(at), got, want);
  }
}

}  // namespace emu
