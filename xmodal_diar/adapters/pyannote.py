"""The turn encoder as a ``pyannote.audio.Model``, saved and loaded as pyannote does.

``Model.from_pretrained("pytorch_model.bin")`` rebuilds :class:`TurnEmbeddingModel` from
the checkpoint's ``pyannote.audio.architecture`` entry, so the stock
``pyannote.audio.pipelines.SpeakerDiarization(embedding=...)`` can use it too.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications
from pyannote.audio.utils.receptive_field import conv1d_receptive_field_center, conv1d_receptive_field_size

from xmodal_diar.models import TurnEncoder, build_encoder, encoder_name

CHECKPOINT_NAME = "pytorch_model.bin"
FEATURE_WINDOW, FEATURE_STEP = 400, 160  # samples at 16 kHz: SpeechBrain Fbank/MFCC defaults


class TurnEmbeddingModel(Model):
    """Speaker-turn embedding model: ``forward(waveforms (B, 1, T), weights=None) -> (B, D)``.

    Parameters
    ----------
    encoder : short name of a registered encoder (``tristounet``, ``ecapa``, ``xvector``).
    encoder_config : its constructor arguments.
    duration : chunk duration (seconds) advertised in ``specifications``.

    ``weights`` (B, F) are pyannote's frame-level masks: samples of frames whose weight
    is at most 0.5 are dropped before embedding (all are kept if none is above).
    """

    def __init__(
        self,
        encoder: str = "ecapa",
        encoder_config: Optional[dict] = None,
        duration: float = 3.0,
        sample_rate: int = 16000,
        num_channels: int = 1,
        task=None,
    ):
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        if sample_rate != 16000:
            raise ValueError(f"TurnEmbeddingModel works at 16 kHz, got sample_rate={sample_rate}")
        self.save_hyperparameters("encoder", "encoder_config", "duration")
        self.encoder = build_encoder(encoder, **(encoder_config or {}))
        self.specifications = Specifications(
            problem=Problem.REPRESENTATION,
            resolution=Resolution.CHUNK,
            duration=duration,
            min_duration=self.encoder.min_duration,
        )

    @classmethod
    def from_encoder(cls, encoder: TurnEncoder, duration: float = 3.0) -> "TurnEmbeddingModel":
        model = cls(encoder=encoder_name(encoder), encoder_config=encoder.config, duration=duration)
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    # pyannote's Inference(window="sliding") asks every model for its receptive field:
    # here the SpeechBrain feature frames (25 ms windows every 10 ms); the pooled embedding
    # of a chunk sees all of its frames.
    def receptive_field_size(self, num_frames: int = 1) -> int:
        """Samples seen by ``num_frames`` consecutive feature frames."""
        return conv1d_receptive_field_size(num_frames, kernel_size=FEATURE_WINDOW, stride=FEATURE_STEP)

    def receptive_field_center(self, frame: int = 0) -> int:
        """Sample at the centre of feature frame ``frame``."""
        return conv1d_receptive_field_center(frame, kernel_size=FEATURE_WINDOW, stride=FEATURE_STEP)

    @classmethod
    def from_speechbrain(cls, model_dir: Union[str, Path], duration: float = 3.0) -> "TurnEmbeddingModel":
        """The pyannote Model of an xmodal-diar SpeechBrain export (``hyperparams.yaml`` +
        ``embedding_model.ckpt`` + ``xmodal_diar.json``), for the stock pipeline:
        ``SpeakerDiarization(embedding=TurnEmbeddingModel.from_speechbrain(dir), ...)``
        (pyannote 4.0.7 passes ``token=`` to SpeechBrain 1.1.2, which rejects it, when
        given the directory itself)."""
        import json

        model_dir = Path(model_dir)
        info_file, ckpt = model_dir / "xmodal_diar.json", model_dir / "embedding_model.ckpt"
        for file in (info_file, ckpt):
            if not file.is_file():
                raise FileNotFoundError(f"{model_dir}: missing {file.name}; not an xmodal-diar SpeechBrain export")
        info = json.loads(info_file.read_text())
        model = cls(encoder=info["encoder"], encoder_config=info.get("encoder_config"), duration=duration)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.encoder.embedding_model.load_state_dict(state)
        return model.eval()

    def forward(self, waveforms: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        if waveforms.ndim != 3 or waveforms.shape[1] != 1:
            raise ValueError(f"TurnEmbeddingModel expects (batch, 1, time) waveforms, got {tuple(waveforms.shape)}")
        wavs = waveforms[:, 0]
        if weights is None:
            return self.encoder(wavs)
        keep = F.interpolate(weights[:, None].float(), size=wavs.shape[1], mode="nearest")[:, 0] > 0.5
        keep[keep.sum(1) == 0] = True
        n = keep.sum(1)
        packed = wavs.new_zeros(wavs.shape[0], int(n.max()))
        for i in range(wavs.shape[0]):
            packed[i, : n[i]] = wavs[i, keep[i]]
        return self.encoder(packed, n.float() / packed.shape[1])


def save_pyannote_checkpoint(model: Union[TurnEmbeddingModel, TurnEncoder], path: Union[str, Path]) -> Path:
    """Write ``model`` as a pyannote/Lightning checkpoint (``pytorch_model.bin``)."""
    import lightning

    if isinstance(model, TurnEncoder):
        model = TurnEmbeddingModel.from_encoder(model)
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # adds the "pyannote.audio" entry
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def load_turn_embedding_model(path: Union[str, Path]) -> TurnEmbeddingModel:
    """Load a checkpoint with ``Model.from_pretrained``, insisting that it is one of ours."""
    path = Path(path)
    file = path / CHECKPOINT_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such checkpoint")
    from xmodal_diar.checkpoints import load_checkpoint

    ckpt = load_checkpoint(file, "any", weights_only=False)
    arch = ckpt.get("pyannote.audio", {}).get("architecture") if isinstance(ckpt, dict) else None
    if arch is None:
        raise ValueError(f"{file}: not a pyannote.audio checkpoint (no 'pyannote.audio' entry)")
    if (arch.get("module"), arch.get("class")) != (TurnEmbeddingModel.__module__, TurnEmbeddingModel.__name__):
        raise ValueError(
            f"{file}: a checkpoint of {arch.get('module')}.{arch.get('class')}, "
            f"not of a speaker-turn embedding model ({TurnEmbeddingModel.__module__}.TurnEmbeddingModel)"
        )
    with warnings.catch_warnings():  # a frozen pretrained trunk is named, not stored: no parameters is expected
        warnings.filterwarnings("ignore", message=r".*contains no parameters")
        model = Model.from_pretrained(file)
    model.eval()
    return model
