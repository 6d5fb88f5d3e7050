// gantry-health: one grpc.health.v1.Health/Check call, for container health
// checks (compose's `healthcheck`, Docker's HEALTHCHECK) where Kubernetes'
// native gRPC probe is not available.
//
//   gantry-health [--server 127.0.0.1:50051] [--timeout_seconds 5] [--tls_ca FILE] [SERVICE]
//
// Prints the serving status; exits 0 only for SERVING. SERVICE "" (the
// default) is the server as a whole; a model name checks that model.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "gantry-server address");
ABSL_FLAG(double, timeout_seconds, 5, "deadline of the check");
ABSL_FLAG(std::string, tls_ca, "", "connect over TLS, verifying the server against this CA file");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("gantry-health [--server ADDRESS] [--timeout_seconds S] [--tls_ca FILE] [SERVICE]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!absl::GetFlag(FLAGS_tls_ca).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_tls_ca));
    if (!in) {
      std::fprintf(stderr, "--tls_ca %s cannot be read\n", absl::GetFlag(FLAGS_tls_ca).c_str());
      return 2;
    }
    grpc::SslCredentialsOptions options;
    options.pem_root_certs.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    credentials = grpc::SslCredentials(options);
  }
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(absl::GetFlag(FLAGS_server), credentials));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_timeout_seconds) * 1000)));
  grpc::health::v1::HealthCheckRequest request;
  if (args.size() == 2) request.set_service(args[1]);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "health check of %s failed: %s\n", absl::GetFlag(FLAGS_server).c_str(),
                 status.error_message().c_str());
    return 1;
  }
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}
