# Source me: creates ./.venv on first use and installs the collection (pinned versions) into it.
# Needs only Python >= 3.10 (3.11 recommended) and git. Re-installs when pyproject.toml changes.
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "[setup] creating $ROOT/.venv with $PY"
    "$PY" -m venv "$ROOT/.venv"
fi
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
STAMP="$ROOT/.venv/.installed-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
    echo "[setup] installing the collection and its pinned dependencies (first run: a few minutes)"
    python -m pip install -q --upgrade pip
    python -m pip install -q -e "$ROOT[test]"
    touch "$STAMP"
fi
cd "$ROOT"
