// gantry-cli: a small client for gantry-server that streams to the terminal.
//
//   gantry-cli [--server ADDRESS] models
//   gantry-cli load NAME | unload NAME [--force]
//   gantry-cli generate --model NAME [--max_tokens N] [--temperature T] [--seed S] PROMPT...
//   gantry-cli chat --model NAME [--system TEXT] MESSAGE...
// With --tls_ca FILE over TLS; the bearer token, if the server wants one,
// from GANTRY_TOKEN.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_join.h"
#include "absl/status/status.h"
#include "gantry/v1/gantry.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "gantry-server address");
ABSL_FLAG(std::string, model, "", "model name (generate, chat)");
ABSL_FLAG(int32_t, max_tokens, 0, "most tokens to generate (0: the server's default)");
ABSL_FLAG(double, temperature, -1, "sampling temperature (negative: the server's default)");
ABSL_FLAG(int64_t, seed, -1, "sampling seed (negative: random)");
ABSL_FLAG(std::string, system, "", "system message (chat)");
ABSL_FLAG(bool, force, false, "unload: cancel running requests after the grace period");
ABSL_FLAG(std::string, tls_ca, "", "connect over TLS, verifying the server against this CA file");

namespace {

const char* StateName(gantry::v1::ModelState state) {
  switch (state) {
    case gantry::v1::MODEL_STATE_UNLOADED: return "unloaded";
    case gantry::v1::MODEL_STATE_LOADING: return "loading";
    case gantry::v1::MODEL_STATE_READY: return "ready";
    case gantry::v1::MODEL_STATE_UNLOADING: return "unloading";
    case gantry::v1::MODEL_STATE_FAILED: return "failed";
    default: return "?";
  }
}

// "error: NOT_FOUND (MODEL_NOT_FOUND): model ..." — the code's name and the
// reason from the status details.
int Report(const grpc::Status& status) {
  if (status.ok()) return 0;
  std::string reason;
  google::rpc::Status details;
  if (!status.error_details().empty() && details.ParseFromString(status.error_details())) {
    for (const auto& any : details.details()) {
      google::rpc::ErrorInfo info;
      if (any.UnpackTo(&info)) reason = " (" + info.reason() + ")";
    }
  }
  const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  std::fprintf(stderr, "error: %s%s: %s\n", code.c_str(), reason.c_str(), status.error_message().c_str());
  return 1;
}

void PrintModel(const gantry::v1::ModelStatus& m) {
  std::printf("%-20s %-10s %-8s %8.1f MB  blocks %lld/%lld free  running %u  waiting %u%s%s\n", m.name().c_str(),
              StateName(m.state()), m.devices_size() ? m.devices(0).c_str() : "", m.weight_bytes() / 1e6,
              static_cast<long long>(m.kv_blocks_free()), static_cast<long long>(m.kv_blocks_total()),
              m.requests_running(), m.requests_waiting(), m.error().empty() ? "" : "  error: ", m.error().c_str());
}

gantry::v1::SamplingParameters Parameters() {
  gantry::v1::SamplingParameters p;
  if (absl::GetFlag(FLAGS_max_tokens) > 0) p.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  if (absl::GetFlag(FLAGS_temperature) >= 0) p.set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  if (absl::GetFlag(FLAGS_seed) >= 0) p.set_seed(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)));
  return p;
}

template <typename Reader>
int StreamToTerminal(Reader& reader) {
  gantry::v1::GenerateResponse response;
  gantry::v1::Usage usage;
  gantry::v1::FinishReason reason = gantry::v1::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&response)) {
    std::fwrite(response.text().data(), 1, response.text().size(), stdout);
    std::fflush(stdout);
    if (response.has_usage()) usage = response.usage();
    if (response.finish_reason() != gantry::v1::FINISH_REASON_UNSPECIFIED) reason = response.finish_reason();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return Report(status);
  std::fprintf(stderr, "\n[%s; %u prompt + %u generated tokens; first token after %.3f s]\n",
               reason == gantry::v1::FINISH_REASON_STOP ? "stop" : reason == gantry::v1::FINISH_REASON_LENGTH ? "length" : "cancelled",
               usage.prompt_tokens(), usage.completion_tokens(), usage.time_to_first_token_seconds());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "gantry-cli [--server ADDRESS] models | load NAME | unload NAME [--force] | "
      "generate --model NAME PROMPT... | chat --model NAME [--system TEXT] MESSAGE...");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  const std::string command = args[1];
  const std::string rest = absl::StrJoin(args.begin() + 2, args.end(), " ");
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!absl::GetFlag(FLAGS_tls_ca).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_tls_ca));
    if (!in) return Report(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "--tls_ca cannot be read"));
    grpc::SslCredentialsOptions options;
    options.pem_root_certs.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    credentials = grpc::SslCredentials(options);
  }
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_server), credentials);
  auto models = gantry::v1::Models::NewStub(channel);
  auto inference = gantry::v1::Inference::NewStub(channel);
  grpc::ClientContext context;
  // The bearer token from the environment (a flag would show in `ps`).
  if (const char* token = std::getenv("GANTRY_TOKEN"); token != nullptr && *token != 0) {
    context.AddMetadata("authorization", std::string("Bearer ") + token);
  }
  if (command == "models") {
    gantry::v1::ListModelsResponse response;
    grpc::Status status = models->List(&context, {}, &response);
    for (const auto& m : response.models()) PrintModel(m);
    for (const auto& b : response.budgets()) {
      std::printf("budget %-13s %8.1f of %.1f MB in use\n", b.device().c_str(), b.used_bytes() / 1e6,
                  b.total_bytes() / 1e6);
    }
    return Report(status);
  }
  if (command == "load" || command == "unload") {
    if (rest.empty()) return Report(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, command + " needs a model name"));
    gantry::v1::ModelStatus response;
    grpc::Status status;
    if (command == "load") {
      gantry::v1::LoadModelRequest request;
      request.set_name(rest);
      status = models->Load(&context, request, &response);
    } else {
      gantry::v1::UnloadModelRequest request;
      request.set_name(rest);
      request.set_force(absl::GetFlag(FLAGS_force));
      status = models->Unload(&context, request, &response);
    }
    if (status.ok()) PrintModel(response);
    return Report(status);
  }
  if (command == "generate") {
    gantry::v1::GenerateRequest request;
    request.set_model(absl::GetFlag(FLAGS_model));
    request.set_text(rest);
    *request.mutable_parameters() = Parameters();
    auto reader = inference->Generate(&context, request);
    return StreamToTerminal(reader);
  }
  if (command == "chat") {
    gantry::v1::ChatRequest request;
    request.set_model(absl::GetFlag(FLAGS_model));
    if (!absl::GetFlag(FLAGS_system).empty()) {
      auto* m = request.add_messages();
      m->set_role("system");
      m->set_content(absl::GetFlag(FLAGS_system));
    }
    auto* m = request.add_messages();
    m->set_role("user");
    m->set_content(rest);
    *request.mutable_parameters() = Parameters();
    auto reader = inference->Chat(&context, request);
    return StreamToTerminal(reader);
  }
  std::fprintf(stderr, "unknown command '%s'\n%s\n", command.c_str(), absl::ProgramUsageMessage().data());
  return 2;
}
