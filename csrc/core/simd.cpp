#include "core/simd.hpp"

#include <algorithm>
#include <atomic>

namespace fastcell::core {
namespace {
std::atomic<int> g_limit{static_cast<int>(Simd::avx512)};
}  // namespace

Simd cpu_simd() noexcept {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const Simd best = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("bmi2")) {
      return Simd::avx512;
    }
    return __builtin_cpu_supports("avx2") ? Simd::avx2 : Simd::portable;
  }();
  return best;
#else
  return Simd::portable;
#endif
}

Simd simd() noexcept {
  return static_cast<Simd>(std::min(static_cast<int>(cpu_simd()), g_limit.load(std::memory_order_relaxed)));
}

void set_simd_limit(Simd limit) noexcept { g_limit.store(static_cast<int>(limit), std::memory_order_relaxed); }

}  // namespace fastcell::core
