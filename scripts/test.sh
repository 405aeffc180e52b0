#!/usr/bin/env bash
# The test command of the README: set-up (if needed), lint, then the whole test suite on CPU.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check .
python -m pytest -q "$@"
