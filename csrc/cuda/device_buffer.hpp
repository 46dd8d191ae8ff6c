// Owning device memory and CUDA error checks for the twins and their bindings (plain C++: the
// bindings include it with the host compiler).
#pragma once
#ifdef FASTCELL_WITH_CUDA
#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace fastcell::cuda {

// Throws std::runtime_error naming the call and the CUDA error.
inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA call ") + what + " failed: " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ")");
  }
}

// `count` elements of T on the current device, freed on destruction. Not copyable, movable.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) { resize(count); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    swap(other);
    return *this;
  }
  ~DeviceBuffer() {
    if (data_ != nullptr) cudaFree(data_);  // no throw from a destructor; a failed free leaks
  }

  // Grows (never shrinks) the allocation; the contents are not kept.
  void resize(std::size_t count) {
    if (count <= capacity_) {
      size_ = count;
      return;
    }
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    capacity_ = size_ = 0;
    void* p = nullptr;
    check_cuda(cudaMalloc(&p, (count ? count : 1) * sizeof(T)), "cudaMalloc");
    data_ = static_cast<T*>(p);
    capacity_ = size_ = count;
  }
  void upload(const T* host, std::size_t count, cudaStream_t stream) {
    resize(count);
    if (count) check_cuda(cudaMemcpyAsync(data_, host, count * sizeof(T), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync(H2D)");
  }
  void download(T* host, std::size_t count, cudaStream_t stream) const {
    if (count) check_cuda(cudaMemcpyAsync(host, data_, count * sizeof(T), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync(D2H)");
  }
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  void swap(DeviceBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace fastcell::cuda
#endif  // FASTCELL_WITH_CUDA
