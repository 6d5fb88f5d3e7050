#include "runtime/internal/penalty_state.h"

#include <algorithm>

#include "runtime/internal/torch_util.h"

namespace gantry::runtime {

PenaltyState::PenaltyState(int64_t vocab_size, at::Device device) : vocab_size_(vocab_size), device_(device) {}

void PenaltyState::Grow() {
  const int64_t old_capacity = seen_.defined() ? seen_.size(0) : 0;
  const int64_t capacity = std::max<int64_t>(8, 2 * old_capacity);
  auto options = at::TensorOptions().device(device_);
  at::Tensor seen = at::zeros({capacity, vocab_size_}, options.dtype(at::kBool));
  at::Tensor counts = at::zeros({capacity, vocab_size_}, options.dtype(at::kFloat));
  if (old_capacity > 0) {
    seen.narrow(0, 0, old_capacity).copy_(seen_);
    counts.narrow(0, 0, old_capacity).copy_(counts_);
  }
  seen_ = seen;
  counts_ = counts;
  // Row 0 stays zero (read for rows without penalties) and row 1 takes their
  // updates (never read); hand out the rest, lowest first.
  for (int64_t row = capacity - 1; row >= std::max<int64_t>(2, old_capacity); --row) free_rows_.push_back(row);
}

int64_t PenaltyState::Add(absl::Span<const int32_t> tokens, int64_t num_prompt) {
  if (free_rows_.empty()) Grow();
  const int64_t row = free_rows_.back();
  free_rows_.pop_back();
  std::vector<int64_t> all(tokens.begin(), tokens.end());
  std::vector<int64_t> generated(tokens.begin() + std::min<int64_t>(num_prompt, tokens.size()), tokens.end());
  seen_[row].zero_();
  counts_[row].zero_();
  if (!all.empty()) seen_[row].index_fill_(0, Upload(all, device_), true);
  if (!generated.empty()) {
    at::Tensor ids = Upload(generated, device_);
    counts_[row].index_add_(0, ids, at::ones({ids.size(0)}, counts_.options()));
  }
  return row;
}

void PenaltyState::Remove(int64_t row) { free_rows_.push_back(row); }

at::Tensor PenaltyState::Seen(const at::Tensor& rows) const { return seen_.index_select(0, rows); }

at::Tensor PenaltyState::Counts(const at::Tensor& rows) const { return counts_.index_select(0, rows); }

void PenaltyState::Record(const at::Tensor& rows, const at::Tensor& tokens) {
  // Rows without penalties name row 0, which must stay zero: their updates
  // go to row 1, which nothing reads (a mask would need a host sync).
  at::Tensor target = rows + rows.eq(0).to(rows.scalar_type());
  seen_.index_put_({target, tokens}, at::ones({rows.size(0)}, seen_.options()));
  counts_.index_put_({target, tokens}, at::ones({rows.size(0)}, counts_.options()), /*accumulate=*/true);
}

}  // namespace gantry::runtime
