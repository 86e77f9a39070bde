// Host memory for the ops' outputs. A fresh NumPy array of more than glibc's mmap threshold
// (128 KiB until frees raise it) is a fresh mapping: every call faults in and zeroes its
// pages, which costs as much as the kernel for a small layer (LeNet's 1.2 MB activations) and
// ~30% of im2col at batch 8. Blocks of released outputs are kept, bucketed by size, and
// handed to the next output of a similar size, as PyTorch's CUDA caching allocator does for
// device memory. A NumPy array owns its block through a _HostBlock base object, so the
// block returns to the cache exactly when the last view of the array is gone.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "fastconv/bindings.hpp"
#include "fastconv/check.hpp"
#include "fastconv/pyarray.hpp"

namespace fastconv {

namespace {

// Smaller outputs come from glibc's bins, which reuse freed memory without faulting.
constexpr size_t kMinCachedBytes = size_t(128) << 10;
// Blocks from here on start on a 2 MiB boundary and ask for transparent huge pages, as
// NumPy does for its own large arrays: one fault and one TLB entry per 2 MiB.
constexpr size_t kHugePageBytes = size_t(2) << 20;
constexpr size_t kHugeBlockBytes = 2 * kHugePageBytes;
constexpr size_t kDefaultLimitMiB = 1024;

// Four sizes per power of two (5/4, 6/4, 7/4, 8/4 of the lower one), so a block is at most
// 20% larger than the array it holds and nearby shapes share blocks.
size_t block_bytes_for(size_t bytes) {
  const int log2_floor = 63 - __builtin_clzll(uint64_t(bytes - 1));
  const size_t step = size_t(1) << (log2_floor - 2);
  return (bytes + step - 1) / step * step;
}

size_t limit_from_environment() {
  const char* text = std::getenv("FASTCONV_HOST_CACHE_MB");
  if (text == nullptr || *text == '\0') return kDefaultLimitMiB << 20;
  char* end = nullptr;
  const long long mib = std::strtoll(text, &end, 10);
  FC_CHECK(*end == '\0' && mib >= 0, "FASTCONV_HOST_CACHE_MB must be a whole number of MiB >= 0, "
           "got '", text, "'");
  return size_t(mib) << 20;
}

class HostCache {
 public:
  explicit HostCache(size_t limit_bytes) : limit_bytes_(limit_bytes) {}
  HostCache(const HostCache&) = delete;
  HostCache& operator=(const HostCache&) = delete;
  ~HostCache() { release(); }

  // A block of block_bytes_for(bytes) bytes, reused when one is idle.
  std::pair<void*, size_t> take(size_t bytes) {
    const size_t size = block_bytes_for(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = idle_.find(size);
      if (it != idle_.end() && !it->second.empty()) {
        void* block = it->second.back();
        it->second.pop_back();
        idle_bytes_ -= size;
        ++reuses_;
        return {block, size};
      }
    }
    return {allocate(size), size};
  }

  void give_back(void* block, size_t size) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_bytes_ + size <= limit_bytes_) {
        idle_[size].push_back(block);
        idle_bytes_ += size;
        return;
      }
    }
    std::free(block);
  }

  // Frees every idle block; returns the bytes handed back to the system.
  size_t release() {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t freed = idle_bytes_;
    for (auto& bucket : idle_)
      for (void* block : bucket.second) std::free(block);
    idle_.clear();
    idle_bytes_ = 0;
    return freed;
  }

  size_t limit_bytes() const { return limit_bytes_; }

  py::dict stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t idle_blocks = 0;
    for (const auto& bucket : idle_) idle_blocks += bucket.second.size();
    py::dict out;
    out["idle_bytes"] = idle_bytes_;
    out["idle_blocks"] = idle_blocks;
    out["limit_bytes"] = limit_bytes_;
    out["reuses"] = reuses_;
    return out;
  }

 private:
  static void* allocate(size_t size) {
    const size_t alignment = size >= kHugeBlockBytes ? kHugePageBytes : 64;
    void* block = std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
    if (block == nullptr) throw std::bad_alloc();
    if (alignment == kHugePageBytes) madvise(block, size, MADV_HUGEPAGE);  // a hint only
    return block;
  }

  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> idle_;
  size_t idle_bytes_ = 0;
  const size_t limit_bytes_;
  uint64_t reuses_ = 0;
};

// Shared so that arrays still alive when the module's statics are destroyed at exit keep
// the cache they return their blocks to.
const std::shared_ptr<HostCache>& host_cache() {
  static const std::shared_ptr<HostCache> cache =
      std::make_shared<HostCache>(limit_from_environment());
  return cache;
}

// The base object of an array built on a cached block.
class HostBlock {
 public:
  explicit HostBlock(size_t bytes) : cache_(host_cache()) {
    std::tie(data_, size_) = cache_->take(bytes);
  }
  HostBlock(HostBlock&& other) noexcept
      : cache_(std::move(other.cache_)), data_(std::exchange(other.data_, nullptr)),
        size_(other.size_) {}
  HostBlock(const HostBlock&) = delete;
  HostBlock& operator=(const HostBlock&) = delete;
  HostBlock& operator=(HostBlock&&) = delete;
  ~HostBlock() {
    if (data_ != nullptr) cache_->give_back(data_, size_);
  }

  void* data() const { return data_; }

 private:
  std::shared_ptr<HostCache> cache_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

py::array host_empty(const py::tuple& shape, const py::dtype& dtype) {
  std::vector<int64_t> extents;
  for (const py::handle extent : shape) extents.push_back(extent.cast<int64_t>());
  size_t bytes = size_t(dtype.itemsize());
  for (int64_t extent : extents) {
    FC_CHECK(extent >= 0, "host_empty: shape must not be negative, got ", tuple_str(extents));
    bytes *= size_t(extent);
  }
  std::vector<py::ssize_t> dims(extents.begin(), extents.end());
  if (bytes < kMinCachedBytes || host_cache()->limit_bytes() == 0)
    return py::array(dtype, dims);
  py::object base = py::cast(HostBlock(bytes));
  void* data = base.cast<HostBlock&>().data();
  return py::array(dtype, dims, {}, data, base);
}

}  // namespace

void bind_host_cache(py::module_& m) {
  py::class_<HostBlock>(m, "_HostBlock",
                        "Owns a cached host block while a NumPy array views it.");
  m.def("host_empty", &host_empty, py::arg("shape"), py::arg("dtype"),
        "An uninitialized C-contiguous array; from 128 KiB on its memory comes from the "
        "output cache (FASTCONV_HOST_CACHE_MB, default 1024, caps the idle memory kept; 0 "
        "turns the cache off).");
  m.def("host_cache_release", [] { return host_cache()->release(); },
        "Return every idle cached block to the system; the number of bytes freed.");
  m.def("host_cache_stats", [] { return host_cache()->stats(); },
        "idle_bytes, idle_blocks, limit_bytes and reuses of the output cache.");
}

}  // namespace fastconv
