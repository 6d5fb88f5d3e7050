// Post-processors of Hugging Face tokenizer.json: TemplateProcessing,
// BertProcessing, RobertaProcessing, ByteLevel and Sequence. They add the
// special tokens around one text or a pair (a query and a document for a
// cross-encoder) and set the token type ids.
#ifndef GANTRY_RUNTIME_TEXT_POST_PROCESSOR_H_
#define GANTRY_RUNTIME_TEXT_POST_PROCESSOR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace gantry::text {

// Token ids with their token type (segment) ids, one each.
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Rewrites the encodings of one text or a pair (type ids 0 and 1 on the
  // way in) into the parts the caller concatenates, as the reference's
  // process_encodings. INVALID_ARGUMENT for a pair the config has no
  // template for.
  virtual absl::Status Process(std::vector<Encoding>* encodings, bool add_special_tokens) const = 0;
};

// A null config gives nullptr (no post-processing). An unknown type is an
// error naming it.
absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const nlohmann::json& config);

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_POST_PROCESSOR_H_
