"""``xmodal_diar.outputs``: atomic writes, collision-free uri-safe stems, temporaries."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from xmodal_diar.outputs import OutputError, atomic_path, atomic_write, output_stems, remove_temporaries


def test_uri_safe_stems_have_no_white_space_and_never_collide(tmp_path):
    inputs = [tmp_path / "my show ü.wav", tmp_path / "my_show_ü.mp3", tmp_path / "d1" / "clip.wav",
              tmp_path / "d2" / "clip.wav", tmp_path / "show.part1.mp4"]
    stems = output_stems(inputs, uri_safe=True)
    assert len(set(stems.values())) == len(inputs)
    assert not any(any(c.isspace() for c in stem) for stem in stems.values())
    assert stems[str(inputs[2])] == "d1_clip" and stems[str(inputs[4])] == "show.part1"
    assert output_stems(inputs[:1]) == {str(inputs[0]): "my show ü"}  # the default keeps the name


def test_a_failed_write_leaves_neither_a_file_nor_a_temporary(tmp_path):
    target = tmp_path / "x.rttm"
    with pytest.raises(OutputError, match="x.rttm.*No space left"):
        with atomic_write(target) as fp:
            fp.write("SPEAKER partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(tmp_path / "a.npz") as tmp:  # writers that open the file themselves
        with open(tmp, "wb") as fp:
            np.savez(fp, x=np.arange(3))
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_remove_temporaries_only_removes_what_atomic_write_leaves(tmp_path):
    (tmp_path / ".dev00.rttm.abc123.tmp").write_text("partial")  # a killed writer's
    (tmp_path / ".trn00.rttm.def456.tmp").write_text("partial")
    (tmp_path / "dev00.rttm").write_text("")
    assert remove_temporaries(tmp_path, "dev00.*") == 1
    assert remove_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["dev00.rttm"]


def test_a_done_file_is_recomputed_when_the_model_config_changed(tmp_path):
    """A rerun after the model's tuned values changed (e.g. a package upgrade changing the
    embedded default) must not keep the old RTTM: the record holds the config's hash."""
    import shutil
    from pathlib import Path

    from xmodal_diar.batch import manifest
    from xmodal_diar.batch.jobs import BatchOptions, FileJob
    from xmodal_diar.pipelines import DEFAULT_MODEL_DIR

    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(Path(DEFAULT_MODEL_DIR) / "config.yaml", model / "config.yaml")
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"x")
    job = FileJob(source=str(audio), uri="a", size=1, mtime_ns=1)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.rttm").write_text("")
    options = BatchOptions(model=str(model))
    record = {**manifest.new_record(job, options), "status": "ok", "outputs": ["a.rttm"]}
    manifest.write_record(out, record)
    assert manifest.completed_record(out, job, options) is not None
    assert BatchOptions().config()["model_config"] == options.config()["model_config"]  # same file, same hash
    (model / "config.yaml").write_text((model / "config.yaml").read_text().replace("threshold: 0.6", "threshold: 0.7"))
    assert manifest.completed_record(out, job, options) is None
