#!/usr/bin/env bash
# Build the wheel, install it (no dependencies: the venv of scripts/env.sh has them) into a
# temporary target, and run `xmodal-diar diarize` and `xmodal-diar faces` from outside the
# checkout: catches package data missing from the wheel and imports of checkout-only files.
# Usage: bash scripts/wheel_smoke.sh   (after `source scripts/env.sh`; needs ../shared/data)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${XMODAL_DATA:-$root/../shared/data}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$tmp/wheel" "$root"
python -m pip install --quiet --no-deps --no-compile --target "$tmp/site" "$tmp"/wheel/xmodal_diar-*.whl
cd "$tmp"  # outside the checkout: only the installed wheel provides xmodal_diar
export PYTHONPATH="$tmp/site"
xmodal() { "$tmp/site/bin/xmodal-diar" "$@"; }  # the console script pip installed with the wheel
python - <<PY
import xmodal_diar, sys
assert xmodal_diar.__file__.startswith("$tmp/site/"), xmodal_diar.__file__
print("[wheel] xmodal_diar from", xmodal_diar.__file__)
PY
xmodal diarize "$data/ami-debug/dev00.wav" --out "$tmp/out" --quiet
test -s "$tmp/out/dev00.rttm"
xmodal faces "$data/talking-heads/00002.mp4" --out "$tmp/faces" --fps 2 --quiet
ls "$tmp/faces" | grep -q "00002"
echo "[wheel] diarize and faces ran from the installed wheel"
