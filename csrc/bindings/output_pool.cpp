#include "bindings/output_pool.hpp"

#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>

namespace fastcell::bindings {
namespace {

// Each buffer starts with a 64-byte header holding its size, so the data stays 64-byte aligned.
constexpr std::size_t kHeader = 64;

struct Pool {
  std::mutex mutex;
  std::multimap<std::size_t, void*> free;  // by size, oldest first: data pointers ready for reuse
  std::size_t held = 0;                    // bytes allocated for the buffers in `free`
};

// Never destroyed: arrays can outlive every static at interpreter exit and still give back.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

std::size_t& size_of(void* data) { return *reinterpret_cast<std::size_t*>(static_cast<char*>(data) - kHeader); }

// What a buffer of `bytes` really takes: its header, rounded up as aligned_alloc wants.
std::size_t allocation(std::size_t bytes) { return (kHeader + bytes + 63) / 64 * 64; }

}  // namespace

void* pool_take(std::size_t bytes) {
  {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    // The most recently freed buffer of this size: the likeliest to be in cache still.
    const auto [first, end] = p.free.equal_range(bytes);
    if (first != end) {
      const auto hit = std::prev(end);
      void* data = hit->second;
      p.free.erase(hit);
      p.held -= allocation(bytes);
      return data;
    }
  }
  char* block = static_cast<char*>(std::aligned_alloc(64, allocation(bytes)));
  if (block == nullptr) return nullptr;
  void* data = block + kHeader;
  size_of(data) = bytes;
  return data;
}

void pool_give(void* data) noexcept {
  const std::size_t bytes = size_of(data);
  {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.held + allocation(bytes) <= kPoolBytes) {
      try {
        p.free.emplace(bytes, data);
        p.held += allocation(bytes);
        return;
      } catch (...) {  // no memory for the pool's node: free the buffer instead
      }
    }
  }
  std::free(static_cast<char*>(data) - kHeader);
}

std::size_t pooled_bytes() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  return p.held;
}

}  // namespace fastcell::bindings
