# Source me: creates ./.venv on first use and installs the collection into it, always with the exact
# versions of requirements/constraints.txt (see docs/dependencies.md). Needs only Python >= 3.11 and git.
# Re-installs when pyproject.toml or the constraints file changes. POCKET_EXTRAS picks the extras
# (default "test,cpu,tracking": the tests, the CPU inference engines, TensorBoard and MLflow; e.g. POCKET_EXTRAS=test,cpu,ray for Ray too).
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
POCKET_EXTRAS="${POCKET_EXTRAS:-test,cpu,tracking}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "[setup] creating $ROOT/.venv with $PY"
    "$PY" -m venv "$ROOT/.venv"
fi
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
STAMP="$ROOT/.venv/.installed-$( (echo "$POCKET_EXTRAS"; cat "$ROOT/pyproject.toml" "$ROOT/requirements/constraints.txt") \
    | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
    echo "[setup] installing the collection [$POCKET_EXTRAS] with the pinned versions (first run: a few minutes)"
    python -m pip install -q --upgrade pip
    python -m pip install -q -c "$ROOT/requirements/constraints.txt" -e "$ROOT[$POCKET_EXTRAS]"
    rm -f "$ROOT"/.venv/.installed-*
    touch "$STAMP"
fi
cd "$ROOT"
