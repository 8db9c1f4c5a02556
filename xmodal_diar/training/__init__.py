"""Training face-regularised speaker-turn embeddings with SpeechBrain recipes.

- :mod:`~xmodal_diar.training.manifests` CSV manifests (turns + face teacher columns) and their builders;
- :mod:`~xmodal_diar.training.dataio` ``dataio_prep``: datasets, random short crops, PK batch sampler;
- :mod:`~xmodal_diar.training.brain` :class:`CrossModalBrain`, the weighted terms, checkpoints.

:func:`run_recipe` is the body of every ``recipes/<Corpus>/CrossModal/train.py``:
parse the command line (``sb.parse_arguments``), load the hyperparameters, prepare the
manifests on the main process (``run_on_main``), build the Brain, fit, export.

Every recipe YAML is a complete HyperPyYAML file, as in SpeechBrain's own recipes:
``hyperpyyaml.load_hyperpyyaml(open(f), overrides={"data_folder": ...})`` loads it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

from xmodal_diar.training.brain import (
    CrossModalBrain,
    CrossModalTerm,
    DisentanglementTerm,
    FeatureAugmentedEncoder,
    find_checkpoint_dir,
    load_checkpoint_encoder,
    load_pretrained_encoder,
    write_encoder_info,
)
from xmodal_diar.training.dataio import IdentityBatchSampler, dataio_prep
from xmodal_diar.training.manifests import ManifestError, read_manifest, write_manifest

logger = logging.getLogger(__name__)

__all__ = [
    "CrossModalBrain", "CrossModalTerm", "DisentanglementTerm", "FeatureAugmentedEncoder", "IdentityBatchSampler",
    "ManifestError", "dataio_prep", "find_checkpoint_dir", "load_checkpoint_encoder", "load_pretrained_encoder",
    "read_manifest", "run_recipe", "write_encoder_info", "write_manifest",
]


def model_card(hparams: dict, info: dict, train_stats: Optional[dict] = None) -> str:
    """The model card (``README.md``) written with an exported model."""
    terms = ", ".join(f"{k} (λ={getattr(v, 'weight', '?')})" for k, v in (hparams.get("cross_modal_terms") or {}).items())
    lines = [
        f"# xmodal-diar speaker-turn encoder: {hparams.get('method', '?')}",
        "",
        f"- encoder: `{info['encoder']}` {info['config']}",
        f"- speaker loss: {hparams.get('speaker_loss', 'triplet')} (weight {hparams.get('speaker_weight', 1.0)}); "
        f"cross-modal terms: {terms or 'none'}",
        f"- training manifest: `{hparams.get('train_annotation')}`; epochs {hparams.get('number_of_epochs')}, "
        f"crops {hparams.get('crop_min')}-{hparams.get('crop_max')} s, seed {hparams.get('seed')}",
        f"- last training losses: {train_stats}" if train_stats else "- last training losses: n/a",
        "",
        "Load: `speechbrain.inference.speaker.EncoderClassifier.from_hparams(source=DIR, savedir=...)`, "
        "`pyannote.audio.Model.from_pretrained(DIR/pytorch_model.bin)` or "
        "`pyannote.audio.Pipeline.from_pretrained(DIR)`. Measured results: see the recipe README.",
        "",
    ]
    return "\n".join(lines)


def run_recipe(argv: Sequence[str], prepare: Optional[Callable[[dict], None]] = None) -> CrossModalBrain:
    """Body of a recipe's ``train.py``: ``python train.py hparams/X.yaml --key=value ...``."""
    import speechbrain as sb
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.distributed import run_on_main

    hparams_file, run_opts, overrides = sb.parse_arguments(list(argv))
    sb.utils.distributed.ddp_init_group(run_opts)  # no-op unless started by torchrun
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"],
                                   hyperparams_to_save=hparams_file, overrides=overrides)
    if prepare is not None:
        run_on_main(prepare, kwargs={"hparams": hparams})
    if hparams.get("pretrained_encoder"):
        run_on_main(_discard_result, args=[load_pretrained_encoder, hparams["encoder"], hparams["pretrained_encoder"],
                                           Path(hparams["save_folder"]) / "pretrained"],
                    kwargs={"target": hparams.get("pretrained_target", "embedding_model")})
        if sb.utils.distributed.if_main_process() is False:  # other ranks load the collected copy
            load_pretrained_encoder(hparams["encoder"], hparams["pretrained_encoder"],
                                    Path(hparams["save_folder"]) / "pretrained",
                                    target=hparams.get("pretrained_target", "embedding_model"))
    data = run_on_main_result(dataio_prep, hparams)
    if hparams.get("trunk_cache"):  # the frozen trunk's embeddings are cached: train the head(s) on them
        from xmodal_diar.training.trunk_cache import use_cached_trunk_inputs

        for module in hparams["modules"].values():
            use_cached_trunk_inputs(module)
    if hparams.get("speaker_loss") == "aam" and len(data["label_encoder"]) > hparams["n_speakers"]:
        raise ValueError(f"n_speakers={hparams['n_speakers']} but the training data has "
                         f"{len(data['label_encoder'])} identities: pass --n_speakers={len(data['label_encoder'])}")
    brain = CrossModalBrain(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts,
        checkpointer=hparams["checkpointer"], face_centroids=data["face_centroids"], face_rows=data["face_rows"],
    )
    brain.fit(
        hparams["epoch_counter"], data["train"], data["valid"],
        train_loader_kwargs={"batch_sampler": data["sampler"], "num_workers": hparams.get("num_workers", 0)},
        valid_loader_kwargs={"batch_size": hparams["valid_batch_size"]},
    )
    if hparams.get("export_folder") and sb.utils.distributed.if_main_process():
        from xmodal_diar.adapters.speechbrain import export_model_dir

        encoder, ckpt, info = load_checkpoint_encoder(hparams["save_folder"], hparams.get("export_select", "latest"))
        export_model_dir(encoder, hparams["export_folder"], card=model_card(hparams, info, getattr(brain, "train_stats", None)),
                         metadata={"method": hparams.get("method"), "checkpoint": str(ckpt)})
        logger.info("exported %s to %s", ckpt, hparams["export_folder"])
    return brain


def run_on_main_result(fn, hparams):
    """``fn(hparams)`` after the main process has run it once (it writes the label encoder)."""
    from speechbrain.utils.distributed import run_on_main

    run_on_main(_discard_result, args=[fn, hparams])  # run_on_main broadcasts (pickles) results
    return fn(hparams)


def _discard_result(fn, *args, **kwargs) -> None:
    fn(*args, **kwargs)
