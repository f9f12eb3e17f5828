#!/usr/bin/env bash
# The main job: set up .venv, build the sample clips, process them, and open the dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
exec .venv/bin/ferpipe demo "$@"
