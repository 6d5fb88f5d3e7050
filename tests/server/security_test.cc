// gRPC access: bearer tokens (API and admin) and TLS with client
// certificates, through the real gantry-server, gantry-cli and gantry-adapter
// (issue 13: anyone who reached the port could Models.Unload with force).
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gantry/v1/gantry.grpc.pb.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"
#include "tests/server/shared_server.h"

namespace gantry {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Config(const std::string& extra = "") {
  const std::string root = GANTRY_SOURCE_DIR;
  return "drain_timeout_seconds: 1\n"
         "defaults:\n  kv_cache_mib: 16\n" +
         extra +
         "models:\n"
         "  - name: demo\n    path: " + root + "/models/demo\n    resident: true\n    max_context: 2048\n"
         "  - name: llama\n    path: " + root + "/tests/models/llama\n    dtype: float32\n";
}

std::string Reason(const grpc::Status& status) { return testing::ErrorReasonOf(status); }

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string Shell(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::string out;
  char buffer[512];
  while (pipe && std::fgets(buffer, sizeof(buffer), pipe)) out += buffer;
  if (pipe) pclose(pipe);
  return out;
}

// A throw-away CA, a server certificate for 127.0.0.1 and a client one.
std::string MakeCertificates() {
  const std::string dir = ::testing::TempDir() + "/gantry_tls";
  const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script =
      "set -e; rm -rf " + dir + "; mkdir -p " + dir + "; cd " + dir +
      "; openssl req -x509" + key + " -keyout ca.key -out ca.crt -days 2 -subj /CN=gantry-test-ca"
      "; openssl req" + key + " -keyout server.key -out server.csr -subj /CN=localhost"
      "; printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext"
      "; openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext"
      "; openssl req" + key + " -keyout client.key -out client.csr -subj /CN=gantry-test-client"
      "; openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2";
  const std::string out = Shell("bash -c \"" + script + "\"");
  EXPECT_TRUE(std::ifstream(dir + "/client.crt").good()) << out;
  return dir;
}

grpc::Status Generate(v1::Inference::Stub& stub, const std::string& token) {
  grpc::ClientContext context;
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::GenerateRequest request;
  request.set_model("demo");
  request.set_text("hello");
  request.mutable_parameters()->set_max_tokens(2);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  return reader->Finish();
}

TEST(SecurityTest, TokensGuardTheApiAndOnlyAdminTokensLoadAndUnload) {
  setenv("GANTRY_API_TOKENS", "user-token-1, user-token-2", 1);
  setenv("GANTRY_ADMIN_TOKENS", "admin-token", 1);
  testing::ServerProcess server("security_tokens", Config());
  unsetenv("GANTRY_API_TOKENS");
  unsetenv("GANTRY_ADMIN_TOKENS");
  ASSERT_FALSE(server.address().empty()) << server.Log();
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto inference = v1::Inference::NewStub(channel);
  auto models = v1::Models::NewStub(channel);

  grpc::Status none = Generate(*inference, "");
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Reason(none), "UNAUTHENTICATED");
  EXPECT_THAT(none.error_message(), HasSubstr("authorization: Bearer <token>"));
  EXPECT_EQ(Generate(*inference, "user-token-3").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Generate(*inference, "user-token-2").ok());
  EXPECT_TRUE(Generate(*inference, "admin-token").ok()) << "admins may use the API too";

  auto unload = [&](const std::string& token) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::UnloadModelRequest request;
    request.set_name("demo");
    request.set_force(true);
    v1::ModelStatus status;
    return models->Unload(&context, request, &status);
  };
  EXPECT_EQ(unload("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status denied = unload("user-token-1");
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Reason(denied), "PERMISSION_DENIED");
  EXPECT_THAT(denied.error_message(), HasSubstr("Models.Unload needs an admin token"));
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer user-token-1");
    v1::ListModelsResponse list;
    EXPECT_TRUE(models->List(&context, {}, &list).ok()) << "reading model states is API access";
  }
  EXPECT_TRUE(unload("admin-token").ok());

  // Health stays open for load balancers and probes.
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext health_context;
  grpc::health::v1::HealthCheckResponse reply;
  EXPECT_TRUE(health->Check(&health_context, {}, &reply).ok());

  // gantry-cli takes the token from GANTRY_TOKEN.
  const std::string cli = std::string(GANTRY_CLI_BINARY) + " --server " + server.address() + " models";
  EXPECT_THAT(Shell(cli), HasSubstr("error: UNAUTHENTICATED (UNAUTHENTICATED)"));
  EXPECT_THAT(Shell("GANTRY_TOKEN=user-token-1 " + cli), HasSubstr("demo"));

  EXPECT_EQ(server.Terminate(15s), 0);
  const std::string log = server.Log();
  EXPECT_THAT(log, HasSubstr("2 API token(s), 1 admin token(s)"));
  EXPECT_THAT(log, Not(HasSubstr("user-token"))) << "tokens are never logged";
  EXPECT_THAT(log, Not(HasSubstr("admin-token")));
}

TEST(SecurityTest, TlsWithClientCertificatesThroughTheAdapterToo) {
  const std::string dir = MakeCertificates();
  const std::string tokens = dir + "/tokens";
  std::ofstream(tokens) << "# API tokens\nadapter-token\n";
  testing::ServerProcess server(
      "security_tls", Config("tls:\n  cert_file: " + dir + "/server.crt\n  key_file: " + dir +
                             "/server.key\n  client_ca_file: " + dir + "/ca.crt\n"
                             "auth:\n  api_tokens_file: " + tokens + "\n"));
  ASSERT_FALSE(server.address().empty()) << server.Log();

  grpc::SslCredentialsOptions with_cert;
  with_cert.pem_root_certs = Slurp(dir + "/ca.crt");
  with_cert.pem_cert_chain = Slurp(dir + "/client.crt");
  with_cert.pem_private_key = Slurp(dir + "/client.key");
  auto secure = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::SslCredentials(with_cert)));
  EXPECT_TRUE(Generate(*secure, "adapter-token").ok());
  EXPECT_EQ(Generate(*secure, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);

  grpc::SslCredentialsOptions without_cert;
  without_cert.pem_root_certs = with_cert.pem_root_certs;
  auto anonymous = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::SslCredentials(without_cert)));
  EXPECT_FALSE(Generate(*anonymous, "adapter-token").ok()) << "a client certificate is required";
  auto plaintext = v1::Inference::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(Generate(*plaintext, "adapter-token").ok());

  // The adapter over TLS with its client certificate and the token.
  const std::string adapter_config = dir + "/adapter.yaml";
  std::ofstream(adapter_config) << "upstream_ca_file: ca.crt\nupstream_cert_file: client.crt\n"
                                   "upstream_key_file: client.key\nupstream_token_file: tokens\n";
  testing::ServerProcess adapter("security_adapter", GANTRY_ADAPTER_BINARY,
                                 {"--config", adapter_config, "--listen", "127.0.0.1:0", "--upstream",
                                  server.address()});
  ASSERT_FALSE(adapter.address().empty()) << adapter.Log();
  const std::string reply = Shell("curl -s -w ' %{http_code}' http://" + adapter.address() +
                                "/v1/completions -d '{\"model\":\"demo\",\"prompt\":\"hi\",\"max_tokens\":2}'");
  EXPECT_THAT(reply, HasSubstr("\"object\":\"text_completion\"")) << reply << adapter.Log();
  EXPECT_THAT(reply, HasSubstr(" 200"));
  EXPECT_EQ(adapter.Terminate(10s), 0);

  // The adapter's own HTTPS, with the same test CA's server certificate.
  std::ofstream(adapter_config, std::ios::app) << "tls_cert_file: server.crt\ntls_key_file: server.key\n";
  testing::ServerProcess https("security_https", GANTRY_ADAPTER_BINARY,
                               {"--config", adapter_config, "--listen", "127.0.0.1:0", "--upstream", server.address()});
  ASSERT_FALSE(https.address().empty()) << https.Log();
  const std::string secure_reply = Shell("curl -s --cacert " + dir + "/ca.crt -w ' %{http_code}' https://" +
                                         https.address() + "/v1/completions -d '{\"model\":\"demo\",\"prompt\":\"hi\",\"max_tokens\":2}'");
  EXPECT_THAT(secure_reply, HasSubstr(" 200")) << secure_reply << https.Log();
  EXPECT_THAT(Shell("curl -s -o /dev/null -w '%{http_code}' http://" + https.address() + "/health"),
              Not(HasSubstr("200")))
      << "plain HTTP is not served on the HTTPS port";
  EXPECT_THAT(https.Log(), HasSubstr("serving OpenAI-compatible HTTPS"));
  EXPECT_EQ(https.Terminate(10s), 0);
  EXPECT_EQ(server.Terminate(15s), 0);
  EXPECT_THAT(server.Log(), HasSubstr("gRPC over TLS, client certificates required"));
}

TEST(SecurityTest, MetricsOverHttpsWithClientCertificates) {
  const std::string dir = MakeCertificates();
  testing::ServerProcess server(
      "security_metrics_tls", Config("metrics_tls:\n  cert_file: " + dir + "/server.crt\n  key_file: " + dir +
                                     "/server.key\n  client_ca_file: " + dir + "/ca.crt\n"));
  ASSERT_FALSE(server.address().empty()) << server.Log();
  const std::string url = server.metrics_url();
  ASSERT_THAT(url, ::testing::StartsWith("https://127.0.0.1:"));
  const std::string curl = "curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert " + dir + "/ca.crt ";
  EXPECT_EQ(Shell(curl + "--cert " + dir + "/client.crt --key " + dir + "/client.key " + url), "200");
  EXPECT_THAT(Shell("curl -s --max-time 5 --cacert " + dir + "/ca.crt --cert " + dir + "/client.crt --key " + dir +
                    "/client.key " + url),
              HasSubstr("gantry_model_state{model=\"demo\""));
  EXPECT_NE(Shell(curl + url), "200") << "a client certificate is required";
  const std::string plain = "http://" + url.substr(8);
  EXPECT_NE(Shell("curl -s -o /dev/null -w '%{http_code}' --max-time 5 " + plain), "200")
      << "no plain HTTP on the HTTPS port";
  EXPECT_EQ(server.Terminate(15s), 0);
}

TEST(SecurityTest, MetricsTlsConfigErrorsNameTheKey) {
  testing::ServerProcess server("security_bad_metrics_tls", Config("metrics_tls:\n  cert_file: /x.crt\n"));
  EXPECT_TRUE(server.address().empty());
  EXPECT_EQ(server.WaitExit(15s), 1);
  EXPECT_THAT(server.Log(), HasSubstr("metrics_tls needs both 'cert_file' and 'key_file'"));
}

TEST(SecurityTest, TlsConfigErrorsNameTheProblem) {
  testing::ServerProcess server("security_bad_tls", Config("tls:\n  cert_file: /nonexistent.crt\n  key_file: /x.key\n"));
  EXPECT_TRUE(server.address().empty());
  EXPECT_EQ(server.WaitExit(15s), 1);
  EXPECT_THAT(server.Log(), HasSubstr("tls: /nonexistent.crt cannot be read"));
}

}  // namespace
}  // namespace gantry
