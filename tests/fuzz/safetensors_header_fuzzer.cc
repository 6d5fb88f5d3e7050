// The safetensors header: its JSON against a data section whose size the
// first 8 bytes give (as a file's header length field would).
#include <cstdint>
#include <cstring>

#include "runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t data_size = 0;
  std::memcpy(&data_size, data, 8);
  const absl::string_view json(reinterpret_cast<const char*>(data + 8), size - 8);
  (void)gantry::runtime::ParseSafetensorsHeader(json, data_size % (1ull << 40), "fuzz.safetensors");
  return 0;
}
