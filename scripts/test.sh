#!/usr/bin/env bash
# The test command of the README: set-up (if needed), lint, then the whole test suite on CPU.
# Without arguments every test file runs in its own pytest process: a process that had run OpenVINO/NNCF
# (the engine tests) once segfaulted in a later file's training; one process per file keeps each runtime's
# threads inside the file that used them. With arguments: one pytest run of those ("bash scripts/test.sh -k x").
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check .
if [ "$#" -gt 0 ]; then
    python -m pytest -q "$@"
    exit
fi
failed=()
start=$SECONDS
for f in $(find tests -name 'test_*.py' | sort); do
    echo "== $f"
    python -m pytest -q -p no:cacheprovider "$f" || failed+=("$f")
done
echo "== $(find tests -name 'test_*.py' | wc -l) test files in $((SECONDS - start)) s; failed: ${failed[*]:-none}"
[ "${#failed[@]}" -eq 0 ]
