# Sourced by scripts/dev and scripts/test: make .venv and install the project into it from the
# locked, hash-checked requirements when they have changed since the last install. Needs only
# python3 (3.11+) on the machine. Safe to run twice at once (scripts/dev and scripts/test on a
# fresh clone): the second waits for the first under a lock, then finds the install done.
set -euo pipefail
PY=${PYTHON:-python3}
LOCK=${MAILING_REQUIREMENTS:-requirements-test.lock}
mkdir -p var
exec 9>var/.venv.lock
flock 9
stamp_of() { cat pyproject.toml "$LOCK" | sha256sum | cut -c1-16; }
stamp=".venv/.installed-$(stamp_of)"
if [ ! -f "$stamp" ]; then
  echo "Installing the project and its test tools into .venv from $LOCK (first run only)..." >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet --require-hashes --no-deps -r "$LOCK"
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
flock -u 9
exec 9>&-
