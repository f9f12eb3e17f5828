#!/usr/bin/env bash
# The main job: set up .venv (the runtime only), build the sample clips, process them, and open the dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."
# offline copies of third-party model files (official URL + sha256 in the registry) beside the checkout
if [ -z "${FERPIPE_MODEL_MIRROR:-}" ] && [ -d ../shared/models ]; then
    export FERPIPE_MODEL_MIRROR="$(cd ../shared/models && pwd)"
fi
bash .ci/setup runtime
exec .venv/bin/ferpipe demo "$@"
