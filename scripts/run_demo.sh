#!/usr/bin/env bash
# The main job of README.md: diarize a real recording (pyannote.audio's bundled sample,
# 30 s, 2 speakers) with the model embedded in the package, write its RTTM and a PNG
# timeline to ./output/, and print its DER against the bundled reference.
# Extra arguments go to `xmodal-diar diarize` (e.g. another file: `bash scripts/run_demo.sh my.mp4`).
source "$(dirname "$0")/env.sh" || exit 1
cd "$XMODAL_ROOT"
# (importing pyannote.audio.sample decodes the file with torchcodec: only locate it)
sample_dir="$(python -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("pyannote.audio").origin), "sample"))')"
if [ "$#" -gt 0 ]; then
    exec xmodal-diar diarize "$@" --out output --plot
fi
xmodal-diar diarize "$sample_dir/sample.wav" --reference "$sample_dir/sample.rttm" --out output --plot
echo "--- output/sample.rttm"
cat output/sample.rttm
