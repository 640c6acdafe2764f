#!/usr/bin/env bash
# Run the test suite against the oldest release of every direct dependency that pyproject.toml
# allows (uv's lowest-direct resolution), in a throwaway venv: the floors must be true claims.
# Extra arguments go to pytest (default: the whole suite). Needs network access to PyPI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV=${UV:-.venv/bin/uv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$UV" venv -q --python "${PYTHON3:-python3}" "$work/venv"
"$UV" pip compile -q pyproject.toml --extra test --resolution lowest-direct -o "$work/floors.txt"
"$UV" pip install -q --python "$work/venv/bin/python" -r "$work/floors.txt"
"$UV" pip install -q --python "$work/venv/bin/python" --no-deps -e .
echo "test-floors: the direct dependencies at their floors:"
grep -E "^($(python3 - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
names = [re.split(r"[<>=!~\[;]", d)[0].strip().lower() for d in project["dependencies"] + project["optional-dependencies"]["test"]]
print("|".join(names))
PY
))==" "$work/floors.txt" | sed 's/^/  /'
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
