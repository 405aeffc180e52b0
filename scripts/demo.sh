#!/usr/bin/env bash
# The main job of the README: set-up (if needed), then the collection's demo.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
pocket demo "$@"
