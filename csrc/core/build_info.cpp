#include "core/build_info.hpp"

namespace fastcell::core {
bool has_cuda() noexcept {
#ifdef FASTCELL_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}
}  // namespace fastcell::core
