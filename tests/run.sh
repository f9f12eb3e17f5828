#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
mkdir -p test-artifacts
exec .venv/bin/python -m pytest "$@"
