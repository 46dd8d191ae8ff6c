// Facts about how the core was built, for fastcell.sys_info() and bug reports.
#pragma once
#include <string>

namespace fastcell::core {
bool has_cuda() noexcept;
std::string compiler();
}  // namespace fastcell::core
