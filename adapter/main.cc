// gantry-adapter: OpenAI-compatible HTTP in front of gantry-server's gRPC API
// (for Dify's "OpenAI-API-compatible" provider and any OpenAI SDK).
//
//   gantry-adapter [--config FILE] [--listen 127.0.0.1:8080]
//                  [--upstream 127.0.0.1:50051] [--api_keys k1,k2]
//
// Prints "gantry-adapter listening on HOST:PORT" on stdout once it serves;
// SIGTERM or SIGINT stops it.
#include <httplib.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "adapter/adapter_config.h"
#include "adapter/gateway.h"
#include "server/limits.h"
#include "server/http_listen.h"

ABSL_FLAG(std::string, config, "", "YAML configuration file (keys: adapter/adapter_config.h)");
ABSL_FLAG(std::string, listen, "", "HTTP address:port; overrides the config (default 127.0.0.1:8080)");
ABSL_FLAG(std::string, upstream, "", "gantry-server's gRPC address; overrides the config (default 127.0.0.1:50051)");
ABSL_FLAG(std::string, api_keys, "", "comma-separated Bearer keys; overrides the config (default: none, open)");
ABSL_FLAG(double, request_timeout_seconds, 0, "deadline of one completion; overrides the config (default 600)");

namespace {

int Fail(const std::string& message) {
  spdlog::critical("{}", message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("gantry-adapter"));
  absl::SetProgramUsageMessage("gantry-adapter [--config FILE] [--listen ADDRESS] [--upstream ADDRESS]");
  absl::ParseCommandLine(argc, argv);
  gantry::adapter::AdapterConfig config;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    auto loaded = gantry::adapter::LoadAdapterConfig(absl::GetFlag(FLAGS_config));
    if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
    config = *std::move(loaded);
  }
  if (!absl::GetFlag(FLAGS_listen).empty()) config.listen = absl::GetFlag(FLAGS_listen);
  if (!absl::GetFlag(FLAGS_upstream).empty()) config.upstream = absl::GetFlag(FLAGS_upstream);
  if (!absl::GetFlag(FLAGS_api_keys).empty()) {
    config.api_keys = absl::StrSplit(absl::GetFlag(FLAGS_api_keys), ',', absl::SkipEmpty());
  }
  if (absl::GetFlag(FLAGS_request_timeout_seconds) > 0) {
    config.request_timeout_seconds = absl::GetFlag(FLAGS_request_timeout_seconds);
  }

  // Signals go to a waiting thread (blocked here, before any thread starts).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Messages as large as the HTTP bodies the adapter accepts (gRPC's default
  // is 4 MiB); the server takes the same.
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxSendMessageSize(gantry::kMaxMessageBytes);
  channel_args.SetMaxReceiveMessageSize(gantry::kMaxMessageBytes);
  auto channel = grpc::CreateCustomChannel(config.upstream, grpc::InsecureChannelCredentials(), channel_args);
  gantry::adapter::Gateway gateway(config, channel);
  httplib::Server server;
  const int threads = config.max_connections;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  server.set_read_timeout(60, 0);
  server.set_write_timeout(60, 0);
  server.set_payload_max_length(gantry::kMaxRequestBodyBytes);
  gateway.Register(&server);
  auto bound = gantry::server::BindHttpServer(&server, config.listen, "listen", "listen");
  if (!bound.ok()) return Fail(std::string(bound.status().message()));

  std::thread stopper([&server, signals] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    spdlog::info("signal {}: stopping", signal_number);
    server.stop();
  });
  std::printf("gantry-adapter listening on %s:%d\n", bound->host.c_str(), bound->port);
  std::fflush(stdout);
  spdlog::info("serving OpenAI-compatible HTTP on {}:{} for gantry-server at {}{}", bound->host, bound->port, config.upstream,
               config.api_keys.empty() ? "" : " (API keys required)");
  server.listen_after_bind();
  stopper.join();
  spdlog::info("stopped");
  return 0;
}
