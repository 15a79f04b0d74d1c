#!/usr/bin/env bash
# The whole test suite: type-check the tests, then jest (unit and end-to-end, real nginx on
# loopback ports). Extra arguments go to jest, e.g. `npm test -- tests/e2e/cli`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
node_modules/.bin/tsc -p tsconfig.test.json
exec node --experimental-vm-modules --disable-warning=ExperimentalWarning node_modules/jest/bin/jest.js "$@"
