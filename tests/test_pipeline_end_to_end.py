"""The CLASSICAL path of BroadcastDiarization (``turns="classical"``: VAD + change detection)
end to end on real audio: pyannote's sample, ami-debug, a two-speaker LibriSpeech montage;
hooks, face evidence, from_pretrained, Optimizer. The default path: test_pipeline_segmentation.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pyannote.core import Annotation, Segment

import pyannote.audio
from xmodal_diar.audio import load_audio
from xmodal_diar.models import TristouNet
from xmodal_diar.pipelines import (
    DEFAULT_MODEL_DIR,
    BroadcastDiarization,
    load_pipeline,
    read_pipeline_config,
    resolve_model_path,
    write_pipeline_config,
)

SAMPLE = Path(pyannote.audio.__file__).parent / "sample"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_encoder(seed: int = 0) -> TristouNet:
    torch.manual_seed(seed)
    return TristouNet().eval()


@pytest.fixture(scope="module")
def pipeline() -> BroadcastDiarization:
    return BroadcastDiarization(embedding=random_encoder(), turns="classical", change_step=0.5)


def assert_well_formed(diarization: Annotation, uri: str) -> None:
    assert isinstance(diarization, Annotation) and diarization.uri == uri
    assert all(label.startswith("SPEAKER_") for label in diarization.labels())
    for label in diarization.labels():
        timeline = diarization.label_timeline(label)
        assert timeline.duration() == pytest.approx(timeline.support().duration())  # no self-overlap


class RecordingHook:
    def __init__(self):
        self.calls = []

    def __call__(self, step_name, step_artifact, file=None, total=None, completed=None):
        self.calls.append((step_name, total, completed))


def test_sample_structure_coverage_and_progress_hook(pipeline):
    from pyannote.audio.pipelines.utils.hook import Hooks, ProgressHook
    from pyannote.database.util import load_rttm

    reference = load_rttm(SAMPLE / "sample.rttm")["sample"]
    recorder = RecordingHook()
    with Hooks(ProgressHook(transient=True), recorder) as hook:
        output = pipeline(str(SAMPLE / "sample.wav"), hook=hook)
    diarization = output.speaker_diarization
    assert output.exclusive_speaker_diarization == diarization  # one speaker at a time
    assert output.speaker_embeddings.shape[0] == len(diarization.labels())
    assert_well_formed(diarization, "sample")
    # covers the reference speech
    speech = reference.get_timeline().support()
    covered = diarization.get_timeline().support().crop(speech, mode="intersection").duration()
    assert covered / speech.duration() > 0.85
    steps = [name for name, _, _ in recorder.calls]
    for step in ("speech_activity", "speaker_change", "embeddings", "clustering", "diarization"):
        assert step in steps
    done = [(t, c) for name, t, c in recorder.calls if name == "embeddings" and c is not None]
    assert done[-1][0] == done[-1][1] >= 1  # the progress reaches its total


def test_ami_debug_num_speakers_is_honoured(pipeline, ami_debug):
    file = {"audio": str(ami_debug / "dev00.wav"), "uri": "dev00"}
    diarization = pipeline(dict(file), num_speakers=3).speaker_diarization
    assert_well_formed(diarization, "dev00")
    assert len(diarization.labels()) == 3
    bounded = pipeline(dict(file), max_speakers=1).speaker_diarization
    assert len(bounded.labels()) == 1


def test_non_speech_gives_an_empty_annotation_and_says_so(pipeline, ami_debug):
    with pytest.warns(UserWarning, match="no speech"):
        diarization = pipeline(str(ami_debug / "empty.wav")).speaker_diarization
    assert isinstance(diarization, Annotation) and len(diarization) == 0 and diarization.uri == "empty"


@pytest.fixture(scope="module")
def montage(librispeech_test):
    """A 5 s / 5 s / 5 s / 5 s A-B-A-B montage of two held-out LibriSpeech speakers."""
    speakers = sorted(p.name for p in librispeech_test.iterdir() if p.is_dir())
    a, b = speakers[0], speakers[5]
    files = {s: sorted((librispeech_test / s).glob("*.flac")) for s in (a, b)}
    pieces, reference, t = [], Annotation(uri="montage"), 0.0
    for path, label in [(files[a][0], a), (files[b][0], b), (files[a][1], a), (files[b][1], b)]:
        x = load_audio(path)[: 5 * 16000]
        pieces.append(x)
        reference[Segment(t, t + len(x) / 16000)] = label
        t += len(x) / 16000
    return {"waveform": torch.cat(pieces)[None], "sample_rate": 16000, "uri": "montage"}, reference


def test_two_speaker_montage_with_a_real_speaker_encoder(montage):
    """Resemblyzer's pretrained GE2E (weights in its wheel) as the turn encoder.

    Measured: 2 speakers, 0.29 s confusion out of 20 s (the rest of the DER is the
    pauses inside the reference turns, which VAD correctly leaves out).
    """
    from pyannote.metrics.diarization import DiarizationErrorRate

    from xmodal_diar.models.ge2e import GE2ETurnEncoder

    file, reference = montage
    pipeline = BroadcastDiarization(embedding=GE2ETurnEncoder(), turns="classical")
    params = pipeline.default_parameters()
    params["change_detection"]["threshold"] = 0.2
    params["clustering"]["threshold"] = 0.45
    pipeline.instantiate(params)
    diarization = pipeline(dict(file)).speaker_diarization
    assert len(diarization.labels()) == 2
    details = DiarizationErrorRate()(reference, diarization, detailed=True)
    assert details["confusion"] < 1.0
    assert details["false alarm"] < 0.5


def test_face_evidence_splits_what_the_voices_could_not(montage, pipeline):
    """A random encoder hears one speaker; confident faces of two people make it two."""
    file, reference = montage
    alone = pipeline(dict(file)).speaker_diarization
    assert len(alone.labels()) == 1
    faces = [(segment, label, 1.0) for segment, _, label in reference.itertracks(yield_label=True)]
    diarization = pipeline(dict(file), face_evidence=faces).speaker_diarization
    assert len(diarization.labels()) == 2
    # each face identity maps (up to turns straddling a true change) to its own speaker
    dominant = []
    for label in reference.labels():
        cropped = diarization.crop(reference.label_timeline(label))
        chart = cropped.chart()
        dominant.append(chart[0][0])
        assert chart[0][1] / cropped.get_timeline().duration() > 0.8
    assert dominant[0] != dominant[1]


def test_resegmentation_keeps_a_valid_partition(montage):
    from xmodal_diar.models.ge2e import GE2ETurnEncoder

    file, _ = montage
    pipeline = BroadcastDiarization(embedding=GE2ETurnEncoder(), turns="classical")
    params = pipeline.default_parameters()
    params.update(resegmentation_margin=0.5)
    params["change_detection"]["threshold"] = 0.2
    params["clustering"]["threshold"] = 0.45
    pipeline.instantiate(params)
    diarization = pipeline(dict(file)).speaker_diarization
    assert_well_formed(diarization, "montage")
    assert len(diarization.labels()) == 2
    # turns of different speakers do not overlap after moving the boundaries
    timeline = diarization.get_timeline()
    assert timeline.duration() == pytest.approx(timeline.support().duration())


def test_from_pretrained_from_another_directory(tmp_path, monkeypatch):
    from pyannote.audio import Model, Pipeline

    from xmodal_diar.adapters.pyannote import save_pyannote_checkpoint

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    encoder = random_encoder(seed=3)
    save_pyannote_checkpoint(encoder, model_dir)
    config = write_pipeline_config(model_dir, {"clustering": {"threshold": 0.3}}, turns="classical", vad="energy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    wav = torch.randn(2, 16000)
    for source in (model_dir, config):
        loaded = Pipeline.from_pretrained(source)
        assert isinstance(loaded, BroadcastDiarization)
        assert loaded.clustering.threshold == 0.3 and loaded.vad.method == "energy"
        assert loaded.change_detection.threshold == 0.5  # defaults fill what the config omits
        assert isinstance(loaded._embedding_model, Model)
        with torch.no_grad():
            expected = encoder(wav)
            got = loaded._embedding_model(wav[:, None])
        assert torch.allclose(expected, got, atol=1e-5)
    assert isinstance(load_pipeline(model_dir), BroadcastDiarization)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        load_pipeline(tmp_path / "elsewhere")
    # read back as written, for scripts that rebuild it with other arguments
    kwargs, params = read_pipeline_config(model_dir)
    assert kwargs == {"embedding": "$model/pytorch_model.bin", "turns": "classical", "vad": "energy"}
    assert params["clustering"]["threshold"] == 0.3
    assert resolve_model_path(model_dir, kwargs["embedding"]) == str(model_dir / "pytorch_model.bin")
    assert resolve_model_path(model_dir, "ecapa-voxceleb") == "ecapa-voxceleb"
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        read_pipeline_config(elsewhere)


def test_embedded_default_model_loads_or_says_it_is_missing():
    if (DEFAULT_MODEL_DIR / "config.yaml").is_file():
        assert isinstance(load_pipeline(), BroadcastDiarization)
    else:
        with pytest.raises(FileNotFoundError, match="embedded default model"):
            load_pipeline()


def test_optimizer_tunes_on_the_ami_debug_protocol(ami_debug):
    from pyannote.database import FileFinder, registry
    from pyannote.pipeline import Optimizer

    registry.load_database(str(ami_debug / "database.yml"))
    protocol = registry.get_protocol("Debug.SpeakerDiarization.Debug", preprocessors={"audio": FileFinder()})
    files = list(protocol.development())
    pipeline = BroadcastDiarization(embedding=random_encoder(), turns="classical", vad="energy", change_step=0.5)
    optimizer = Optimizer(pipeline, sampler="RandomSampler", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = optimizer.tune(files, n_iterations=2, show_progress=False)
    assert 0.0 <= result["loss"] < 2.0
    assert set(result["params"]) >= {"vad", "change_detection", "clustering", "min_turn_duration"}
    assert len(optimizer.study_.trials) == 2
    assert not pipeline.training
