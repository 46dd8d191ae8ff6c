// New numpy arrays for the image kernels' large outputs, backed by recycled buffers.
//
// glibc hands large freed blocks back to the kernel, so each batch's fresh output arrays (two per
// frame, 1.2 MB for 640×480) were page-faulted in again: ~1 ms a frame, 10 ms for a batch of 8
// that segments in 2.4 ms once its pages are mapped. Here a buffer goes back to a small pool when
// its array is freed (the array's base is a capsule that returns it) and the next array of the
// same size takes it. The pool keeps at most kPoolBytes of allocations; the memory is not
// initialised (every kernel that uses this writes its whole output). Pooled arrays do not own
// their data (`flags.owndata` is False, `ndarray.resize` refuses them); copy one to get that.
#pragma once
#include <pybind11/numpy.h>

#include <cstddef>
#include <new>
#include <vector>

namespace fastcell::bindings {

constexpr std::size_t kPoolBytes = std::size_t{64} << 20;
// Smaller outputs are plain numpy arrays: malloc serves them without page faults, and pooling
// many tiny buffers would keep more in headers and map nodes than in data.
constexpr std::size_t kPoolMinBytes = std::size_t{64} << 10;

// A C-contiguous uninitialised array of `shape`, its buffer from the pool when one of that size is free.
template <typename T>
pybind11::array_t<T> pooled_array(const std::vector<pybind11::ssize_t>& shape);

// The bytes the pool holds now (for tests).
std::size_t pooled_bytes();

// A 64-byte aligned buffer of `bytes` (nullptr when out of memory), and its return to the pool
// (the buffer remembers its size).
void* pool_take(std::size_t bytes);
void pool_give(void* buffer) noexcept;

template <typename T>
pybind11::array_t<T> pooled_array(const std::vector<pybind11::ssize_t>& shape) {
  std::size_t count = 1;
  for (const pybind11::ssize_t n : shape) count *= static_cast<std::size_t>(n);
  const std::size_t bytes = count * sizeof(T);
  if (bytes < kPoolMinBytes) return pybind11::array_t<T>(shape);
  void* buffer = pool_take(bytes);
  if (buffer == nullptr) throw std::bad_alloc();
  pybind11::capsule owner;
  try {
    // The capsule owns the buffer from here: it gives it back to the pool when the array dies.
    owner = pybind11::capsule(buffer, [](void* p) { pool_give(p); });
  } catch (...) {
    pool_give(buffer);
    throw;
  }
  return pybind11::array_t<T>(shape, static_cast<T*>(buffer), owner);
}

}  // namespace fastcell::bindings
