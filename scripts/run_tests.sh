#!/usr/bin/env bash
# The test command of README.md: installs what it needs, then runs the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/run_tests.sh -k losses`).
source "$(dirname "$0")/env.sh" || exit 1
cd "$XMODAL_ROOT"
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "[xmodal-diar] pytest collected no tests (exit 5): treating that as a failure" >&2
    exit 1
fi
exit "$rc"
