// gantry-server's YAML configuration.
#include <cstdint>
#include <string>

#include "server/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)gantry::server::ParseConfig(std::string(reinterpret_cast<const char*>(data), size), "/etc/gantry/fuzz.yaml");
  return 0;
}
