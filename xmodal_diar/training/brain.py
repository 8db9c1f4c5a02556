"""``CrossModalBrain``: a speaker loss plus any weighted set of cross-modal terms.

The objective of every recipe (../shared/DESIGN.md)::

    L = w_spk L_speaker(s, y) + Σ_k λ_k L_k(s, y, t, q) + w_moco L_MoCo(q, k)

- ``L_speaker``: ``TripletLoss`` (Le & Odobez) or AAM-softmax (SpeechBrain's
  ``LogSoftmaxWrapper(AdditiveAngularMargin)`` on a cosine ``Classifier``), ``speaker_loss``
  in the YAML;
- ``L_k``: the ``cross_modal_terms`` of the YAML, each a :class:`CrossModalTerm`
  (TET, RDT, CST, MMD, Wang's joint loss, VGSR's MKD with QAW weights) or a
  :class:`DisentanglementTerm` (Nagrani et al., from face tracks, no labels), with its
  weight λ. Face terms see only the samples paired with a face (``has_face``); a batch
  without any gives an exact 0 still connected to the term's parameters (safe under DDP);
- ``L_MoCo``: :class:`xmodal_diar.losses.moco.MoCo` (momentum encoder + queue), a module
  of the Brain, fed two crops of each turn.

The encoder's short name and config are written to ``<save_folder>/encoder.json`` so that
``xmodal-diar export`` (:func:`load_checkpoint_encoder`) can rebuild it from a checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Union

import speechbrain as sb
import torch
from torch import nn

from xmodal_diar.losses.le_odobez import (
    ClusteringStructureTransfer,
    MMDLoss,
    RelativeDistanceTransfer,
    TargetEmbeddingTransfer,
    cluster_face_centroids,
)
from xmodal_diar.losses.vgsr import MarginKnowledgeDistillation
from xmodal_diar.losses.wang import JointEmbeddingLoss

logger = logging.getLogger(__name__)

ENCODER_INFO_NAME = "encoder.json"
ENCODER_RECOVERABLE = "encoder"


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") and isinstance(module, nn.parallel.DistributedDataParallel) else module


def _connected_zero(module: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """0 connected to ``like`` and to every parameter of ``module`` (backward and DDP stay happy)."""
    zero = like.sum() * 0.0
    for p in module.parameters():
        if p.requires_grad:
            zero = zero + p.reshape(-1)[0] * 0.0
    return zero


class CrossModalTerm(nn.Module):
    """One cross-modal loss with its weight λ, applied to the face-paired samples of a batch.

    ``loss`` is one of :class:`TargetEmbeddingTransfer`, :class:`RelativeDistanceTransfer`,
    :class:`ClusteringStructureTransfer`, :class:`MMDLoss` (Le & Odobez),
    :class:`JointEmbeddingLoss` with a ``face_adapter`` (Wang et al.), or
    :class:`MarginKnowledgeDistillation` with optional ``quality_weights`` (VGSR).
    Identity-level terms (TET, RDT, CST) use the identities' face centroids ``t̄_c``,
    given once by :meth:`set_face_teacher`; labels are remapped to the identities with a face.

    ``forward(speaker (B, D), labels (B,), face (B, D_f), has_face (B,), quality (B, Q))``
    returns ``λ L`` (0 when the batch has too few face-paired samples for the term).
    """

    face_rows: torch.Tensor
    face_centroids: torch.Tensor

    def __init__(
        self,
        loss: nn.Module,
        weight: float = 1.0,
        face_adapter: Optional[nn.Module] = None,
        quality_weights: Optional[nn.Module] = None,
        n_clusters: int = 3,
        cluster_method: str = "kmeans",
    ):
        super().__init__()
        supported = (TargetEmbeddingTransfer, RelativeDistanceTransfer, ClusteringStructureTransfer, MMDLoss,
                     JointEmbeddingLoss, MarginKnowledgeDistillation)
        if not isinstance(loss, supported):
            raise ValueError(
                f"CrossModalTerm: unsupported loss {type(loss).__name__}; expected one of "
                f"{[c.__name__ for c in supported]} (Nagrani's objective is DisentanglementTerm)"
            )
        if isinstance(loss, JointEmbeddingLoss) and face_adapter is None:
            raise ValueError("CrossModalTerm: JointEmbeddingLoss needs a face_adapter (xmodal_diar.losses.wang.FaceAdapter)")
        self.loss, self.weight = loss, float(weight)
        self.face_adapter, self.quality_weights = face_adapter, quality_weights
        self.n_clusters, self.cluster_method = n_clusters, cluster_method
        self.register_buffer("face_rows", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("face_centroids", torch.zeros(0, 0), persistent=False)

    def set_face_teacher(self, centroids: torch.Tensor, rows: torch.Tensor) -> None:
        """``centroids`` (C_face, D_f) of the identities with faces; ``rows`` (n_labels,) each
        label's row in it (-1: no face). CST clusters the centroids here, once."""
        self.face_centroids = centroids.to(self.face_rows.device)
        self.face_rows = rows.to(self.face_rows.device)
        if isinstance(self.loss, ClusteringStructureTransfer) and centroids.shape[0] > 0:
            k = min(self.n_clusters, centroids.shape[0])
            if k < self.n_clusters:
                logger.warning("CST: only %d identities with faces, using %d face clusters", centroids.shape[0], k)
            self.loss.set_identity_clusters(cluster_face_centroids(centroids, k, self.cluster_method))

    def forward(self, speaker, labels, face, has_face, quality) -> torch.Tensor:
        loss = self.loss
        mask = has_face.bool()
        if isinstance(loss, (TargetEmbeddingTransfer, RelativeDistanceTransfer, ClusteringStructureTransfer)):
            if self.face_rows.numel() == 0:
                raise ValueError(f"{type(loss).__name__}: face teacher not set; call set_face_teacher()")
            rows = self.face_rows.to(labels.device)[labels]
            mask = rows >= 0
            if int(mask.sum()) < 2:
                return _connected_zero(self, speaker)
            if isinstance(loss, ClusteringStructureTransfer):
                value = loss(speaker[mask], rows[mask])
            else:
                value = loss(speaker[mask], rows[mask], self.face_centroids.to(speaker.device))
        elif int(mask.sum()) < 2:
            return _connected_zero(self, speaker)
        elif isinstance(loss, MMDLoss):
            value = loss(speaker[mask], face[mask])
        elif isinstance(loss, JointEmbeddingLoss):
            value, _ = loss(speaker[mask], self.face_adapter(face[mask]), labels[mask])
        else:  # MarginKnowledgeDistillation
            weights = self.quality_weights(quality[mask]) if self.quality_weights is not None else None
            value = loss(speaker[mask], face[mask], weights)
        return self.weight * value + _connected_zero(self, speaker)


class DisentanglementTerm(nn.Module):
    """Nagrani et al. (ICASSP 2020): content + identity matching + confusion, from face tracks.

    ``audio_heads`` / ``face_heads`` are :class:`~xmodal_diar.losses.nagrani.DisentanglementHeads`
    on the speaker embedding of each audio segment and on each segment's face embedding.
    ``forward(audio (B, N, D), face (B, N, D_f))`` over B face-paired turns (one track
    each, no label needed) returns ``λ (L_C + L_I + γ (L_clf + L_conf))`` where the content
    pseudo-labels of the confusion game are k-means clusters (``n_content_classes``) of
    the detached audio content embeddings of the batch.
    """

    def __init__(self, audio_heads, face_heads, content, identity, confusion, weight: float = 1.0,
                 confusion_weight: float = 0.1):
        super().__init__()
        self.audio_heads, self.face_heads = audio_heads, face_heads
        self.content, self.identity, self.confusion = content, identity, confusion
        self.weight, self.confusion_weight = float(weight), float(confusion_weight)

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        from scipy.cluster.vq import kmeans2

        if audio.shape[0] < 2:
            return _connected_zero(self, audio)
        a_id, a_content = self.audio_heads(audio)
        v_id, v_content = self.face_heads(face)
        loss = self.content(v_content, a_content) + self.identity(v_id, a_id)
        flat = a_content.detach().reshape(-1, a_content.shape[-1]).double().cpu().numpy()
        k = min(self.confusion.num_classes, flat.shape[0])
        _, pseudo = kmeans2(flat, k, minit="++", seed=0)
        pseudo = torch.as_tensor(pseudo, device=audio.device).reshape(a_id.shape[:-1])
        clf, conf = self.confusion(a_id, pseudo)
        return self.weight * (loss + self.confusion_weight * (clf + conf))


class FeatureAugmentedEncoder(nn.Module):
    """A :class:`~xmodal_diar.models.TurnEncoder` with a feature-domain augmentation (SpecAugment,
    Ding et al. 2020) between its features and its normalisation; shares the encoder's weights."""

    def __init__(self, encoder: nn.Module, augment: Optional[nn.Module] = None):
        super().__init__()
        self.encoder, self.augment = encoder, augment

    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        enc = self.encoder
        if getattr(enc, "cached_inputs", False):  # cached frozen-trunk embeddings: head only, no features
            return enc(wavs, wav_lens)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        feats = enc.compute_features(wavs)
        if self.augment is not None:
            feats = self.augment(feats)
        feats = enc.mean_var_norm(feats, wav_lens)
        return enc.embedding_model(feats, wav_lens).squeeze(1)


class CrossModalBrain(sb.Brain):
    """The Brain of every cross-modal recipe (see the module docstring for the objective).

    Extra keyword arguments: ``face_centroids`` (C_face, D_f) and ``face_rows`` (n_labels,)
    from :func:`xmodal_diar.training.dataio.dataio_prep`, passed to every identity-level term.
    Modules: ``encoder`` (a TurnEncoder), optional ``classifier`` (AAM), ``moco``; the
    ``cross_modal_terms`` of the hparams are added as modules ``term_<name>`` and as
    Checkpointer recoverables.
    """

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None,
                 face_centroids: Optional[torch.Tensor] = None, face_rows: Optional[torch.Tensor] = None):
        modules = dict(modules or {})
        terms = dict((hparams or {}).get("cross_modal_terms") or {})
        for name, term in terms.items():
            if not isinstance(term, (CrossModalTerm, DisentanglementTerm)):
                raise ValueError(
                    f"cross_modal_terms[{name}]: expected !new:xmodal_diar.training.CrossModalTerm or "
                    f"DisentanglementTerm, got {type(term).__name__}"
                )
            if isinstance(term, CrossModalTerm) and face_centroids is not None:
                term.set_face_teacher(face_centroids, face_rows)
            modules[f"term_{name}"] = term
        if "moco" in modules:  # the encoder lives inside MoCo (one DDP wrapper per parameter set)
            modules.pop("encoder", None)
        if checkpointer is not None:
            for name, module in modules.items():
                if name not in checkpointer.recoverables and name != ENCODER_RECOVERABLE:
                    checkpointer.add_recoverable(name, module)
        self.term_names = sorted(terms)
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)

    # ------------------------------------------------------------------ forward

    @property
    def encoder(self) -> nn.Module:
        """The TurnEncoder being trained (unwrapped from DDP)."""
        return self.hparams.encoder

    def _embed(self, wavs, lens):
        if "encoder" in self.modules:
            return self.modules.encoder(wavs, lens)
        return _unwrap(self.modules.moco).encoder(wavs, lens)

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        augment = getattr(self.hparams, "wav_augment", None)
        if stage == sb.Stage.TRAIN and augment is not None:
            n = wavs.shape[0]
            wavs, lens = augment(wavs, lens)
            if wavs.shape[0] != n:
                raise ValueError("wav_augment must keep the batch size: set concat_original: False, repeat_augment: 1")
        out = {"emb": self._embed(wavs, lens)}
        if stage == sb.Stage.TRAIN and "moco" in self.modules:
            key, key_lens = batch.sig_key
            out["moco"], _ = self.modules.moco(wavs, key, lens, key_lens)
        disentangle = [n for n in self.term_names if isinstance(self.hparams.cross_modal_terms[n], DisentanglementTerm)]
        if stage == sb.Stage.TRAIN and disentangle:
            mask = batch.has_face.data.reshape(-1).bool()
            segments = batch.segments.data[mask]  # (B_f, N, samples)
            if segments.shape[0] >= 2:
                b, n = segments.shape[:2]
                out["segments"] = self._embed(segments.reshape(b * n, -1), None).reshape(b, n, -1)
                out["face_segments"] = batch.teacher_segments.data[mask]
        return out

    def compute_objectives(self, predictions, batch, stage):
        labels = batch.spk_id_encoded.data.reshape(-1)
        emb = predictions["emb"]
        terms = {}
        total = emb.sum() * 0.0
        weight = getattr(self.hparams, "speaker_weight", 1.0)
        if stage != sb.Stage.TRAIN:
            # validation speakers are unseen: the triplet loss of the embeddings, for every method
            terms["speaker"] = self.hparams.triplet_loss(emb, labels)
            total = total + terms["speaker"]
        elif weight > 0:
            if getattr(self.hparams, "speaker_loss", "triplet") == "aam":
                logits = self.modules.classifier(emb.unsqueeze(1))
                terms["speaker"] = self.hparams.aam_loss(logits, labels.unsqueeze(1))
            else:
                terms["speaker"] = self.hparams.triplet_loss(emb, labels)
            total = total + weight * terms["speaker"]
        if stage == sb.Stage.TRAIN:
            face = batch.teacher.data
            has_face = batch.has_face.data.reshape(-1)
            quality = batch.teacher_quality.data
            for name in self.term_names:
                term = self.modules[f"term_{name}"]
                if isinstance(_unwrap(term), DisentanglementTerm):
                    if "segments" not in predictions:
                        terms[name] = _connected_zero(term, emb)
                    else:
                        terms[name] = term(predictions["segments"], predictions["face_segments"])
                else:
                    terms[name] = term(emb, labels, face, has_face, quality)
                total = total + terms[name]
            if "moco" in predictions:
                terms["moco"] = predictions["moco"]
                total = total + getattr(self.hparams, "moco_weight", 1.0) * terms["moco"]
        for name, value in terms.items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + float(value.detach())
        self.term_count += 1
        return total

    # ------------------------------------------------------------------ stages

    def on_fit_start(self):
        super().on_fit_start()
        if sb.utils.distributed.if_main_process() and self.checkpointer is not None:
            write_encoder_info(self.checkpointer.checkpoints_dir, self.encoder,
                               method=getattr(self.hparams, "method", None))

    def on_stage_start(self, stage, epoch=None):
        self.term_sums, self.term_count = {}, 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss, **{k: v / max(self.term_count, 1) for k, v in self.term_sums.items()}}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            if getattr(self, "has_valid", False):
                return
        elif stage != sb.Stage.VALID:
            return
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None
        logger_ = getattr(self.hparams, "train_logger", None)
        valid = stats if stage == sb.Stage.VALID else None
        if logger_ is not None:
            logger_.log_stats({"epoch": epoch, "lr": lr}, train_stats=self.train_stats, valid_stats=valid)
        if self.checkpointer is not None:
            meta = {"loss": stats["loss"], "epoch": epoch}
            self.checkpointer.save_and_keep_only(meta=meta, min_keys=["loss"], num_to_keep=1)

    def fit(self, epoch_counter, train_set, valid_set=None, progressbar=None, train_loader_kwargs=None,
            valid_loader_kwargs=None):
        self.has_valid = valid_set is not None
        return super().fit(epoch_counter, train_set, valid_set, progressbar, train_loader_kwargs or {},
                           valid_loader_kwargs or {})


# ---------------------------------------------------------------------- checkpoints


def write_encoder_info(save_folder: Union[str, Path], encoder: nn.Module, **extra) -> Path:
    """``<save_folder>/encoder.json``: the encoder's short name and config (what export rebuilds)."""
    from xmodal_diar.models import encoder_name

    path = Path(save_folder) / ENCODER_INFO_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"kind": "xmodal_diar.training/1", "encoder": encoder_name(encoder), "config": encoder.config, **extra}
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def find_checkpoint_dir(path: Union[str, Path], select: str = "latest") -> tuple[Path, dict]:
    """The ``CKPT+...`` folder to export and the ``encoder.json`` info of a recipe's save folder.

    ``path`` is a save folder (a SpeechBrain Checkpointer directory holding ``encoder.json``)
    or one ``CKPT+...`` folder inside it; ``select``: ``latest`` or ``best`` (lowest ``loss``).
    Raises ValueError naming the folder for anything else (an exported model directory,
    a checkpoint without an ``encoder`` recoverable, ...).
    """
    from speechbrain.utils.checkpoints import Checkpointer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint folder")
    if (path / "hyperparams.yaml").is_file() and (path / "embedding_model.ckpt").is_file():
        raise ValueError(f"{path}: this is already an exported model directory, not a recipe's checkpoint folder")
    ckpt = None
    if path.name.startswith("CKPT+"):
        ckpt, path = path, path.parent
    info_path = path / ENCODER_INFO_NAME
    if not info_path.is_file():
        raise ValueError(
            f"{path}: no {ENCODER_INFO_NAME}; expected the save folder of an xmodal-diar recipe "
            f"(results/<method>/<seed>/save), whose CKPT+* folders hold an '{ENCODER_RECOVERABLE}.ckpt'"
        )
    info = json.loads(info_path.read_text())
    if info.get("kind") != "xmodal_diar.training/1" or "encoder" not in info:
        raise ValueError(f"{info_path}: not an xmodal-diar encoder description (kind {info.get('kind')!r})")
    if ckpt is None:
        if select not in ("latest", "best"):
            raise ValueError(f"select must be 'latest' or 'best', got {select!r}")
        found = Checkpointer(path).find_checkpoint(min_key="loss" if select == "best" else None)
        if found is None:
            raise ValueError(f"{path}: no CKPT+* checkpoint in this folder; train first")
        ckpt = Path(found.path)
    if not (ckpt / f"{ENCODER_RECOVERABLE}.ckpt").is_file():
        present = sorted(p.name for p in ckpt.iterdir())
        raise ValueError(
            f"{ckpt}: no {ENCODER_RECOVERABLE}.ckpt (found {present}); not a checkpoint of an xmodal-diar recipe"
        )
    return ckpt, info


def load_checkpoint_encoder(path: Union[str, Path], select: str = "latest"):
    """Rebuild the trained TurnEncoder from a recipe's save folder; returns ``(encoder, ckpt_dir, info)``."""
    from xmodal_diar.models import build_encoder

    ckpt, info = find_checkpoint_dir(path, select)
    encoder = build_encoder(info["encoder"], **info["config"])
    state = torch.load(ckpt / f"{ENCODER_RECOVERABLE}.ckpt", map_location="cpu")
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{ckpt}: {ENCODER_RECOVERABLE}.ckpt does not match the {info['encoder']} encoder of "
                         f"{ENCODER_INFO_NAME} ({str(exc).splitlines()[0]})") from None
    return encoder.eval(), ckpt, info


def load_pretrained_encoder(encoder: nn.Module, source: Union[str, Path], collect_in: Union[str, Path],
                            target: str = "embedding_model") -> nn.Module:
    """Initialise ``encoder`` from a SpeechBrain model directory through SpeechBrain's ``Pretrainer``.

    ``source`` holds ``embedding_model.ckpt`` (an exported xmodal-diar model, a MoCo
    pre-training's export, or a local copy of spkrec-ecapa-voxceleb); ``target`` is the
    dotted sub-module of the encoder that receives it (``embedding_model``, or
    ``embedding_model.ecapa`` for a stock SpeechBrain ECAPA_TDNN checkpoint).
    """
    from speechbrain.utils.parameter_transfer import Pretrainer

    source = Path(source)
    ckpt = source / "embedding_model.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"pretrained_encoder {source}: no embedding_model.ckpt (a SpeechBrain model directory)")
    module = encoder
    for part in target.split("."):
        if not hasattr(module, part):
            raise ValueError(f"pretrained_target {target!r}: {type(module).__name__} has no attribute {part!r}")
        module = getattr(module, part)
    pretrainer = Pretrainer(collect_in=str(collect_in), loadables={"embedding_model": module},
                            paths={"embedding_model": str(ckpt.resolve())})
    pretrainer.collect_files()
    pretrainer.load_collected()
    return encoder
