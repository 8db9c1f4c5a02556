#!/usr/bin/env bash
# Train every method of this recipe on the shared data -- same encoder, data, seed and
# budget (the shared knobs of hparams/*.yaml) -- then evaluate them all on held-out speakers.
#   ./run.sh                       # every method, 2 at a time
#   METHODS="triplet tet" ./run.sh --seed=2
#   TRUNK=campplus ./run.sh        # heads on the frozen pretrained CAM++ trunk (results/campplus_<method>)
set -euo pipefail
cd "$(dirname "$0")"
export PYANNOTE_METRICS_ENABLED=false OMP_NUM_THREADS=1
DATA=${XMODAL_DATA:-$(cd ../../../.. && pwd)/shared/data}
JOBS=${JOBS:-2}
METHODS=${METHODS:-"triplet aam tet mkd_qaw joint rdt cst mmd disentangle moco"}
mkdir -p results/logs
# TRUNK: a frozen pretrained trunk (campplus) under a trainable 192-D head; its embeddings of
# the training crops are computed once (results/manifests/trunk_cache/<trunk>) for every method
PREFIX=""; TRUNK_ARGS=""; OUT=""
if [ -n "${TRUNK:-}" ]; then
    PREFIX="${TRUNK}_"; OUT="--output_folder=results/${PREFIX}{}/1986"
    TRUNK_ARGS="--encoder=!new:xmodal_diar.models.TrunkHeadEncoder --emb_dim=192 --trunk_cache=results/manifests/trunk_cache/$TRUNK"
    [ "$TRUNK" = campplus ] || { echo "TRUNK=$TRUNK: only campplus is wired in run.sh (edit the encoder's trunk: in the YAML for others)"; exit 2; }
fi

# 1. manifests (once; face tracks cached in results/manifests/face_tracks)
[ -f results/manifests/test.csv ] || xmodal-diar prepare shared-data --data-folder "$DATA" \
    --out results/manifests --face-cache results/manifests/face_tracks

# 2. training, JOBS runs at a time; moco_finetune after moco
printf '%s\n' $METHODS | xargs -P "$JOBS" -I{} sh -c \
    "python train.py hparams/{}.yaml --data_folder='$DATA' $OUT $TRUNK_ARGS $* \
     > results/logs/${PREFIX}{}.log 2>&1 && echo done {}"
case " $METHODS " in *" moco "*)
    if [ -n "${TRUNK:-}" ]; then
        set -- --output_folder="results/${PREFIX}moco_finetune/1986" --pretrained_encoder="results/${PREFIX}moco/1986/model" \
            $TRUNK_ARGS "$@"
    fi
    python train.py hparams/moco_finetune.yaml --data_folder="$DATA" "$@" > results/logs/${PREFIX}moco_finetune.log 2>&1
    METHODS="$METHODS moco_finetune";;
esac

# 3. evaluation on librispeech/test-other-10x10 (held out): EER and purity/coverage at 0.5/1/2/4 s
MODELS=$(for m in $METHODS; do echo results/$PREFIX$m/1986/model; done)
if [ -n "${TRUNK:-}" ]; then
    python evaluate.py $MODELS "$TRUNK" --test results/manifests/test.csv --out "results/table_$TRUNK.md"
else
    python evaluate.py $MODELS resemblyzer mfcc --test results/manifests/test.csv --out results/table.md
fi
