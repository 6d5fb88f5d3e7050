// gantry-adapter: OpenAI-compatible HTTP in front of gantry-server's gRPC API
// (for Dify's "OpenAI-API-compatible" provider and any OpenAI SDK).
//
//   gantry-adapter [--config FILE] [--listen 127.0.0.1:8080]
//                  [--upstream 127.0.0.1:50051] [--api_keys k1,k2]
//
// Prints "gantry-adapter listening on HOST:PORT" on stdout once it serves;
// SIGTERM or SIGINT stops it: no new connections, requests in flight get
// kStopGraceSeconds to finish, then their clients are cut (which cancels
// their generations).
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "adapter/adapter_config.h"
#include "adapter/gateway.h"
#include "http/http_server.h"
#include "server/limits.h"

ABSL_FLAG(std::string, config, "", "YAML configuration file (keys: adapter/adapter_config.h)");
ABSL_FLAG(std::string, listen, "", "HTTP address:port; overrides the config (default 127.0.0.1:8080)");
ABSL_FLAG(std::string, upstream, "", "gantry-server's gRPC address; overrides the config (default 127.0.0.1:50051)");
ABSL_FLAG(std::string, api_keys, "", "comma-separated Bearer keys; overrides the config (default: none, open)");
ABSL_FLAG(double, request_timeout_seconds, 0, "deadline of one completion; overrides the config (default 600)");

namespace {

constexpr double kStopGraceSeconds = 5;

int Fail(const std::string& message) {
  spdlog::critical("{}", message);
  return 1;
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " cannot be read"));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// TLS to gantry-server when a CA is configured (with a client certificate
// when one is); plaintext otherwise.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> UpstreamCredentials(
    const gantry::adapter::AdapterConfig& config) {
  if (config.upstream_ca_file.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  auto ca = ReadFile(config.upstream_ca_file, "upstream_ca_file");
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = *ca;
  if (!config.upstream_cert_file.empty()) {
    auto cert = ReadFile(config.upstream_cert_file, "upstream_cert_file");
    if (!cert.ok()) return cert.status();
    auto key = ReadFile(config.upstream_key_file, "upstream_key_file");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  return grpc::SslCredentials(options);
}

// The bearer token for gantry-server: GANTRY_UPSTREAM_TOKEN, else the first
// line of upstream_token_file that is not blank or a '#' comment (the
// server's token file format), else none. Never logged.
absl::StatusOr<std::string> UpstreamToken(const gantry::adapter::AdapterConfig& config) {
  if (const char* env = std::getenv("GANTRY_UPSTREAM_TOKEN"); env != nullptr && *env != 0) return std::string(env);
  if (config.upstream_token_file.empty()) return std::string();
  auto text = ReadFile(config.upstream_token_file, "upstream_token_file");
  if (!text.ok()) return text.status();
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty() && line[0] != '#') return std::string(line);
  }
  return absl::InvalidArgumentError(absl::StrCat("upstream_token_file ", config.upstream_token_file, " holds no token"));
}

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
  auto credentials = UpstreamCredentials(config);
  if (!credentials.ok()) return Fail(std::string(credentials.status().message()));
  auto token = UpstreamToken(config);
  if (!token.ok()) return Fail(std::string(token.status().message()));
  auto channel = grpc::CreateCustomChannel(config.upstream, *credentials, channel_args);
  gantry::adapter::Gateway gateway(config, channel, *token);
  gantry::http::HttpServerOptions options;
  options.listen = config.listen;
  options.tls_cert_file = config.tls_cert_file;  // HTTPS when set
  options.tls_key_file = config.tls_key_file;
  options.limits = config.limits;
  gantry::http::HttpServer server(options);
  gateway.Register(&server);
  if (auto started = server.Start(); !started.ok()) return Fail(std::string(started.message()));

  std::thread stopper([&server, signals] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    spdlog::info("signal {}: stopping", signal_number);
    server.Stop(kStopGraceSeconds);
  });
  std::printf("gantry-adapter listening on %s:%d\n", server.host().c_str(), server.port());
  std::fflush(stdout);
  spdlog::info("serving OpenAI-compatible {} on {}:{} for gantry-server at {}{}",
               config.tls_cert_file.empty() ? "HTTP" : "HTTPS", server.host(), server.port(), config.upstream,
               config.api_keys.empty() ? "" : " (API keys required)");
  stopper.join();
  spdlog::info("stopped");
  return 0;
}
