"""A library import must not change the user's process; the CLI entry point may.

Third-party imports change the process themselves (pyannote.audio sets
``PYANNOTE_METRICS_ENABLED`` from its own config, many libraries add warning filters), so
the probe imports them first and then checks that importing ``xmodal_diar`` adds nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, os, sys, warnings
import torch, lightning, pyannote.audio, pyannote.audio.pipelines, speechbrain, speechbrain.inference.speaker
before = (dict(os.environ), list(warnings.filters))
import xmodal_diar, xmodal_diar.audio, xmodal_diar.pipelines, xmodal_diar.adapters.pyannote, xmodal_diar.training
after = (dict(os.environ), list(warnings.filters))
print(json.dumps({
    "env": sorted(k for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k)),
    "filters": [str(f) for f in after[1] if f not in before[1]],
    "metrics": os.environ.get("PYANNOTE_METRICS_ENABLED"),
}))
"""


def _run(code: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_package_leaves_environment_and_warning_filters_alone():
    result = _run(PROBE)
    assert result["env"] == [] and result["filters"] == []
    assert result["metrics"] != "false"  # pyannote's own default is left to the user


def test_the_cli_entry_point_disables_telemetry_and_torchcodec_warnings():
    code = """
import contextlib, io, json, os, warnings
from xmodal_diar.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main([])
import pyannote.audio
print(json.dumps({"metrics": os.environ.get("PYANNOTE_METRICS_ENABLED"),
                  "filters": [f[1].pattern for f in warnings.filters if f[1] is not None and "torchcodec" in f[1].pattern]}))
"""
    result = _run(code)
    assert result["metrics"] == "false" and result["filters"]
