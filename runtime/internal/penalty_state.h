// Per-sequence penalty state on the model's device: which tokens a sequence
// has seen (prompt and output, for the repetition penalty) and how often it
// generated each (presence and frequency penalties). A row is filled once when
// a sequence with penalties is added and updated on the device with each
// sampled token, so a step never uploads a sequence's history.
#ifndef GANTRY_RUNTIME_INTERNAL_PENALTY_STATE_H_
#define GANTRY_RUNTIME_INTERNAL_PENALTY_STATE_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace gantry::runtime {

class PenaltyState {
 public:
  PenaltyState(int64_t vocab_size, at::Device device);

  // Takes a free row (growing the state if none is left) and fills it from
  // `tokens`, the first `num_prompt` of which are the prompt. Returns the row.
  int64_t Add(absl::Span<const int32_t> tokens, int64_t num_prompt);
  void Remove(int64_t row);

  // The rows named by `rows` ([n] int64 on the device): seen [n, vocab] bool,
  // counts [n, vocab] float32. Row 0 is all zeros: rows without penalties
  // name it (and their Record goes nowhere that is read).
  at::Tensor Seen(const at::Tensor& rows) const;
  at::Tensor Counts(const at::Tensor& rows) const;

  // Records one generated token per row: rows and tokens are [n] int64 on the device.
  void Record(const at::Tensor& rows, const at::Tensor& tokens);

 private:
  void Grow();

  int64_t vocab_size_;
  at::Device device_;
  at::Tensor seen_;    // [capacity, vocab] bool
  at::Tensor counts_;  // [capacity, vocab] float32
  std::vector<int64_t> free_rows_;
};

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_PENALTY_STATE_H_
