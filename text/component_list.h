// Builds the steps of a tokenizer.json "Sequence" component (normalizers,
// pre-tokenizers, decoders) with the factory of that component kind.
#ifndef GANTRY_RUNTIME_TEXT_COMPONENT_LIST_H_
#define GANTRY_RUNTIME_TEXT_COMPONENT_LIST_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gantry::text {

// `make` maps one JSON config to StatusOr<unique_ptr<T>>; null results (a
// null config) are skipped; the first error is returned.
template <typename T, typename Make>
absl::StatusOr<std::vector<std::unique_ptr<T>>> MakeComponents(const nlohmann::json& configs, Make make) {
  std::vector<std::unique_ptr<T>> steps;
  if (!configs.is_array()) return steps;
  for (const auto& config : configs) {
    auto made = make(config);
    if (!made.ok()) return made.status();
    if (*made) steps.push_back(*std::move(made));
  }
  return steps;
}

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_COMPONENT_LIST_H_
