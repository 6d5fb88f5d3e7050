#include "server/encode_results.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace gantry::server {

absl::StatusOr<std::vector<float>> ShapeEmbedding(std::vector<float> pooled, uint32_t dimensions, bool normalize) {
  if (dimensions > pooled.size()) {
    return absl::InvalidArgumentError(absl::StrCat("dimensions ", dimensions, " exceeds the model's ", pooled.size()));
  }
  if (dimensions > 0) pooled.resize(dimensions);
  if (normalize) {
    double norm = 0;
    for (float v : pooled) norm += static_cast<double>(v) * v;
    norm = std::sqrt(norm);
    // sentence-transformers' Normalize divides by max(norm, 1e-12).
    const double scale = 1.0 / std::max(norm, 1e-12);
    for (float& v : pooled) v = static_cast<float>(v * scale);
  }
  return pooled;
}

absl::StatusOr<std::vector<RankedDocument>> RankDocuments(const std::vector<std::vector<float>>& outputs,
                                                          uint32_t top_n) {
  std::vector<RankedDocument> ranked;
  ranked.reserve(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::vector<float>& out = outputs[i];
    if (out.size() != 1 && out.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat("the rerank model gives ", out.size(),
                                                     " labels per pair; supported: 1 or 2"));
    }
    RankedDocument doc;
    doc.index = static_cast<uint32_t>(i);
    // Two labels (not relevant, relevant): softmax's second probability is
    // the sigmoid of their difference.
    doc.logit = out.size() == 1 ? out[0] : out[1] - out[0];
    doc.score = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(doc.logit))));
    ranked.push_back(doc);
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const RankedDocument& a, const RankedDocument& b) { return a.logit > b.logit; });
  if (top_n > 0 && top_n < ranked.size()) ranked.resize(top_n);
  return ranked;
}

}  // namespace gantry::server
