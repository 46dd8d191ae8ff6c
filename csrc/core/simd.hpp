// Which instruction-set twins the CPU kernels run: the best this CPU has, capped by a limit.
//
// The hot loops of letterbox and segment_cells have AVX-512 and AVX2 twins beside their portable
// code, compiled with target attributes and chosen at run time, so a baseline x86-64 build still
// runs SIMD code where the CPU has it. The limit lets the tests run every twin on one machine (an
// AVX-512 developer box would otherwise never execute the portable code) and lets a user rule a
// twin out. Twins give the same results bit for bit, so the limit never changes an answer.
#pragma once

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

}  // namespace fastcell::core
