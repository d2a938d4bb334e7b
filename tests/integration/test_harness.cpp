#include <gtest/gtest.h>
#include "tests/integration/harness.h"
