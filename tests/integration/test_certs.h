#pragma once
// Test certificates made with the openssl CLI (P-256, as small devices use): a CA and the
// certificates it signs, written into a TempDir as NAME.pem and NAME.key (mode 0600). Shared
// by test_dtls_sim.cpp and bench_observe --dtls-cert; throws std::runtime_error with
// openssl's output when a command fails.
#include <string>

#include "tests/integration/harness.h"

namespace coap2mqtt::test {

// A self-signed CA valid for 30 days: dir/NAME.pem, dir/NAME.key, subject CN=NAME.
void makeTestCa(const TempDir& dir, const std::string& name);

// dir/NAME.pem (CN=`cn`, signed by the CA dir/CA.pem + dir/CA.key, valid `days` days from
// now) and its key dir/NAME.key.
void makeTestCert(const TempDir& dir, const std::string& name, const std::string& cn,
                  const std::string& ca, int days = 30);

}  // namespace coap2mqtt::test
