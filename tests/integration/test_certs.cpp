#include "tests/integration/test_certs.h"

#include <sys/stat.h>

#include <stdexcept>
#include <utility>
#include <vector>

namespace coap2mqtt::test {
namespace {

void runOpenssl(const TempDir& dir, std::vector<std::string> argv) {
  Process p(std::move(argv), dir.file("openssl.log"));
  const int rc = p.stop(0, 30s);  // waits for its end: key generation takes milliseconds
  if (rc != 0) {
    if (rc == -1) p.stop(9, 2s);
    throw std::runtime_error("openssl failed (" + std::to_string(rc) + "): " + p.output());
  }
}

}  // namespace

void makeTestCa(const TempDir& dir, const std::string& name) {
  runOpenssl(dir, {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                   "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file(name + ".key"), "-out",
                   dir.file(name + ".pem"), "-days", "30", "-subj", "/CN=" + name});
  ::chmod(dir.file(name + ".key").c_str(), 0600);
}

void makeTestCert(const TempDir& dir, const std::string& name, const std::string& cn,
                  const std::string& ca, int days) {
  runOpenssl(dir, {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-keyout", dir.file(name + ".key"), "-out", dir.file(name + ".csr"),
                   "-subj", "/CN=" + cn});
  runOpenssl(dir, {"openssl", "x509", "-req", "-in", dir.file(name + ".csr"), "-CA",
                   dir.file(ca + ".pem"), "-CAkey", dir.file(ca + ".key"), "-CAcreateserial",
                   "-out", dir.file(name + ".pem"), "-days", std::to_string(days)});
  ::chmod(dir.file(name + ".key").c_str(), 0600);
}

}  // namespace coap2mqtt::test
