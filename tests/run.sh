#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# offline copies of third-party model files (official URL + sha256 in the registry) beside the checkout
if [ -z "${FERPIPE_MODEL_MIRROR:-}" ] && [ -d ../shared/models ]; then
    export FERPIPE_MODEL_MIRROR="$(cd ../shared/models && pwd)"
fi
bash .ci/setup
mkdir -p test-artifacts
exec .venv/bin/python -m pytest "$@"
