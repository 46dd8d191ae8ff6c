// Which instruction-set twins the CPU kernels run: the best this CPU has, capped by a limit.
//
// The hot loops of letterbox and segment_cells have AVX-512 and AVX2 twins beside their portable
// code, compiled with target attributes and chosen at run time, so a baseline x86-64 build still
// runs SIMD code where the CPU has it. The limit lets the tests run every twin on one machine (an
// AVX-512 developer box would otherwise never execute the portable code) and lets a user rule a
// twin out. Twins give the same results bit for bit, so the limit never changes an answer.
#pragma once
#include <cstdint>

// Whether this build compiles the x86 twins: GCC or Clang on x86-64 (not nvcc). They are compiled
// with target attributes, so a baseline x86-64 build still has them, and simd() picks at run time.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__NVCC__)
#define FASTCELL_X86_SIMD 1
#include <immintrin.h>
// The target attribute of each twin, spelled here once: exactly the features cpu_simd() checks for
// its level, so a twin is compiled for what the CPU it is chosen on has, and every AVX-512 twin (and
// the inline helpers it calls) shares one target, which lets them inline into each other.
#define FASTCELL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vbmi,bmi2")))
#define FASTCELL_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define FASTCELL_X86_SIMD 0
#endif

namespace fastcell::core {

enum class Simd : int {
  portable = 0,  // plain C++ (what non-x86 builds always run)
  avx2 = 1,      // AVX2
  avx512 = 2,    // AVX-512 F, BW, VBMI with BMI2 (Ice Lake and later, Zen 4 and later)
};

// The best level this CPU runs (checked once).
Simd cpu_simd() noexcept;

// The level the kernels use now: the lower of cpu_simd() and the limit (default: no limit).
Simd simd() noexcept;

// Cap the level for later calls, in every thread; Simd::avx512 removes the cap.
void set_simd_limit(Simd limit) noexcept;

// Index of the lowest set bit of a non-zero mask (walking the lanes a SIMD compare selected).
inline int lowest_bit(std::uint32_t bits) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctz(bits);
#else
  int k = 0;
  while (!(bits & 1u)) bits >>= 1, ++k;
  return k;
#endif
}

}  // namespace fastcell::core
