# Sourced by scripts/run_tests.sh, scripts/run_demo.sh and .ci/run.
# Creates (once) and activates a virtual environment with the pinned requirements.
# The venv lives outside the clone, keyed on the hash of requirements.txt, so that
# repeated runs (CI included) reuse it; a fresh machine builds it (about 4 minutes).
set -euo pipefail
XMODAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_req_hash="$(sha256sum "$XMODAL_ROOT/requirements.txt" | cut -c1-12)"
XMODAL_VENV="${XMODAL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/xmodal-diar/venv-$_req_hash}"
# FFmpeg's shared libraries: xmodal_diar itself decodes with PyAV (its wheel carries
# FFmpeg), but pyannote.audio 4 decodes files through torchcodec, which needs the system
# libraries (FFmpeg 4 to 7). Installed from Debian when we can (root + apt, ~20 s);
# otherwise pyannote's own file decoding stays unavailable and it says so on import.
_shared_libs="$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)"
if ! grep -q 'libavutil\.so\.5[6-9]' <<<"$_shared_libs"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[xmodal-diar] installing FFmpeg libraries (apt-get install ffmpeg) for torchcodec" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg; } >/dev/null 2>&1 \
            || echo "[xmodal-diar] could not install FFmpeg; pyannote's built-in file decoding will be unavailable (xmodal_diar uses PyAV)" >&2
    else
        echo "[xmodal-diar] FFmpeg libraries not found (install 'ffmpeg' for pyannote's built-in file decoding; xmodal_diar uses PyAV)" >&2
    fi
fi
if [ ! -f "$XMODAL_VENV/.complete" ]; then
    echo "[xmodal-diar] building virtual environment in $XMODAL_VENV (first run only)" >&2
    rm -rf "$XMODAL_VENV"
    mkdir -p "$(dirname "$XMODAL_VENV")"
    python3 -m venv "$XMODAL_VENV"
    "$XMODAL_VENV/bin/python" -m pip install -q -U pip wheel
    "$XMODAL_VENV/bin/python" -m pip install -q -r "$XMODAL_ROOT/requirements.txt"
    touch "$XMODAL_VENV/.complete"
fi
# The package itself, editable, so the checkout in hand is what runs (seconds; skipped
# when the venv already imports xmodal_diar from this checkout).
_installed_from="$(cd / && "$XMODAL_VENV/bin/python" -c 'import os, xmodal_diar; print(os.path.dirname(os.path.dirname(os.path.realpath(xmodal_diar.__file__))))' 2>/dev/null || true)"
if [ "$_installed_from" != "$(realpath "$XMODAL_ROOT")" ]; then
    "$XMODAL_VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$XMODAL_ROOT" >/dev/null 2>&1
fi
export PATH="$XMODAL_VENV/bin:$PATH"
export PYANNOTE_METRICS_ENABLED=false
# OpenMP threads spin while waiting by default: with small networks on 2 shared cores
# that makes them 10-70x slower. Passive waiting costs nothing when the machine is idle.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export XMODAL_DATA="${XMODAL_DATA:-$XMODAL_ROOT/../shared/data}"
