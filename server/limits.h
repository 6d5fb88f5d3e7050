// Size limits shared by gantry-server and gantry-adapter, so a body the
// adapter accepts always fits in a gRPC message both sides accept.
#ifndef GANTRY_SERVER_LIMITS_H_
#define GANTRY_SERVER_LIMITS_H_

namespace gantry {

// gRPC messages either way (gRPC's default is 4 MiB).
inline constexpr int kMaxMessageBytes = 64 << 20;
// HTTP request bodies at the adapter: larger ones get 413 naming the limit.
inline constexpr int kMaxRequestBodyBytes = 32 << 20;

}  // namespace gantry

#endif  // GANTRY_SERVER_LIMITS_H_
