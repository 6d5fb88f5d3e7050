// The checks every encoder input passes, shared by the engine (at submit,
// where a client's error is cheapest) and the runner (its own contract), and
// how the runner splits a batch by length.
#include <algorithm>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "runtime/encoder_runner.h"

namespace gantry::runtime {

absl::Status CheckEncoderInput(const EncoderInput& input, size_t index, const EncoderLimits& limits) {
  const int64_t size = static_cast<int64_t>(input.tokens.size());
  if (size == 0) return absl::InvalidArgumentError(absl::StrCat("input ", index, " is empty"));
  if (size > limits.max_tokens) {
    return absl::OutOfRangeError(
        absl::StrCat("input ", index, " has ", size, " tokens; the model takes at most ", limits.max_tokens));
  }
  for (int32_t token : input.tokens) {
    if (token < 0 || token >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("input ", index, ": token id ", token,
                                                     " is outside the vocabulary [0, ", limits.vocab_size, ")"));
    }
  }
  if (!input.token_types.empty() && static_cast<int64_t>(input.token_types.size()) != size) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", index, " has ", size, " tokens but ", input.token_types.size(), " token types"));
  }
  for (int32_t type : input.token_types) {
    if (type < 0 || type >= limits.type_vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", index, ": token type ", type, " is outside [0, ", limits.type_vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::vector<size_t>> GroupInputsByLength(absl::Span<const int64_t> lengths, int64_t overhead_tokens) {
  const size_t n = lengths.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] < lengths[b]; });
  // best[i]: the least cost of the first i sorted inputs; cut[i]: where the
  // last group of that split starts. A group [j, i) costs overhead +
  // (i - j) x the length of its last (longest) input.
  std::vector<int64_t> best(n + 1, std::numeric_limits<int64_t>::max());
  std::vector<size_t> cut(n + 1, 0);
  best[0] = 0;
  for (size_t i = 1; i <= n; ++i) {
    const int64_t longest = lengths[order[i - 1]];
    for (size_t j = 0; j < i; ++j) {
      // A cut between two inputs of one length never pays: keep them together.
      if (j > 0 && lengths[order[j - 1]] == lengths[order[j]]) continue;
      const int64_t cost = best[j] + overhead_tokens + static_cast<int64_t>(i - j) * longest;
      if (cost < best[i]) {
        best[i] = cost;
        cut[i] = j;
      }
    }
  }
  std::vector<std::vector<size_t>> groups;
  for (size_t i = n; i > 0; i = cut[i]) groups.emplace_back(order.begin() + cut[i], order.begin() + i);
  std::reverse(groups.begin(), groups.end());
  return groups;
}

}  // namespace gantry::runtime
