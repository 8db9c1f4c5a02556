#!/usr/bin/env bash
# Train every method of this recipe on the shared data -- same encoder, data, seed and
# budget (the shared knobs of hparams/*.yaml) -- then evaluate them all on held-out speakers.
#   ./run.sh                       # every method, 2 at a time
#   METHODS="triplet tet" ./run.sh --seed=2
set -euo pipefail
cd "$(dirname "$0")"
export PYANNOTE_METRICS_ENABLED=false OMP_NUM_THREADS=1
DATA=${XMODAL_DATA:-$(cd ../../../.. && pwd)/shared/data}
JOBS=${JOBS:-2}
METHODS=${METHODS:-"triplet aam tet mkd_qaw joint rdt cst mmd disentangle moco"}
mkdir -p results/logs

# 1. manifests (once; face tracks cached in results/manifests/face_tracks)
[ -f results/manifests/test.csv ] || xmodal-diar prepare shared-data --data-folder "$DATA" \
    --out results/manifests --face-cache results/manifests/face_tracks

# 2. training, JOBS runs at a time; moco_finetune after moco
printf '%s\n' $METHODS | xargs -P "$JOBS" -I{} sh -c \
    "python train.py hparams/{}.yaml --data_folder='$DATA' $* > results/logs/{}.log 2>&1 && echo done {}"
case " $METHODS " in *" moco "*)
    python train.py hparams/moco_finetune.yaml --data_folder="$DATA" "$@" > results/logs/moco_finetune.log 2>&1
    METHODS="$METHODS moco_finetune";;
esac

# 3. evaluation on librispeech/test-other-10x10 (held out): EER and purity/coverage at 0.5/1/2/4 s
MODELS=$(for m in $METHODS; do echo results/$m/1986/model; done)
python evaluate.py $MODELS resemblyzer mfcc --test results/manifests/test.csv --out results/table.md
