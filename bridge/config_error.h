#pragma once
// Configuration errors that point at the text: file:line:col, the key, what was expected.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace coap2mqtt::bridge {

struct ConfigError {
  std::string file;
  std::size_t line = 0;    // 1-based; 0 when unknown (e.g. a missing file)
  std::size_t column = 0;  // 1-based; 0 when unknown
  std::string key;         // dotted key, e.g. "rule[2].match.path"; empty for syntax errors
  std::string message;     // what was expected / what is wrong
  std::string toString() const;  // "file:line:col: key: message"
};

// Thrown by loaders after collecting every error of the input.
class ConfigErrors : public std::runtime_error {
 public:
  explicit ConfigErrors(std::vector<ConfigError> errors);
  const std::vector<ConfigError>& errors() const { return errors_; }

 private:
  std::vector<ConfigError> errors_;
};

}  // namespace coap2mqtt::bridge
