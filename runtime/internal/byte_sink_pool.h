// Sinks lent to one load at a time. A load takes a sink for its whole run and
// gives it back when done; a sink whose Finish failed (a short read, a CUDA
// error) is dropped instead of given back, because a staged uploader stays
// failed after its first error: one bad checkpoint must not fail every later
// load on the device. Concurrent loads get sinks of their own (a new one when
// none is idle), so one load's error never reaches another's.
#ifndef GANTRY_RUNTIME_INTERNAL_BYTE_SINK_POOL_H_
#define GANTRY_RUNTIME_INTERNAL_BYTE_SINK_POOL_H_

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/internal/tensor_loader.h"

namespace gantry::runtime {

class ByteSinkPool {
 public:
  using Factory = std::function<absl::StatusOr<std::unique_ptr<ByteSink>>()>;

  // `max_idle`: sinks kept for later loads (each may hold pinned memory);
  // more are made while more loads run at once, and freed when given back.
  ByteSinkPool(Factory factory, int max_idle) : factory_(std::move(factory)), max_idle_(max_idle) {}

  // A sink for one load: an idle one, else a new one from the factory (whose
  // error this returns). Destroying the lease finishes the sink if the load
  // did not, then keeps it for the next load if every Finish succeeded. The
  // pool must outlive its leases.
  absl::StatusOr<std::unique_ptr<ByteSink>> Lease();

  int idle() const;     // sinks waiting for a load
  int created() const;  // sinks the factory made in all

 private:
  class Leased;
  void GiveBack(std::unique_ptr<ByteSink> sink);

  const Factory factory_;
  const int max_idle_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<ByteSink>> idle_;
  int created_ = 0;
};

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_BYTE_SINK_POOL_H_
