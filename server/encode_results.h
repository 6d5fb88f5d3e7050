// What Embed and Rerank return, from the encoder's raw outputs: embeddings
// cut to the asked dimensions and normalized, cross-encoder logits turned
// into relevance scores and ranked. Torch- and gRPC-free, for unit tests.
#ifndef GANTRY_SERVER_ENCODE_RESULTS_H_
#define GANTRY_SERVER_ENCODE_RESULTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace gantry::server {

// The first `dimensions` components of a pooled hidden state (0: all of
// them), scaled to unit length when `normalize` (a zero vector stays zero).
// INVALID_ARGUMENT when `dimensions` exceeds the vector's size.
absl::StatusOr<std::vector<float>> ShapeEmbedding(std::vector<float> pooled, uint32_t dimensions, bool normalize);

struct RankedDocument {
  uint32_t index = 0;  // in the request
  float logit = 0;     // one label: its logit; two: label 1's minus label 0's
  float score = 0;     // in [0, 1]: the sigmoid of `logit`
};

// Each document's cross-encoder output (one or two labels) as a score, best
// first, ties by index; only the best `top_n` (0: all). INVALID_ARGUMENT for
// an output with another number of labels.
absl::StatusOr<std::vector<RankedDocument>> RankDocuments(const std::vector<std::vector<float>>& outputs,
                                                          uint32_t top_n);

}  // namespace gantry::server

#endif  // GANTRY_SERVER_ENCODE_RESULTS_H_
