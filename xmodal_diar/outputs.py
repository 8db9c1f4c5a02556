"""Writing outputs: atomically, under names that never collide, with file-named errors.

- :func:`atomic_write` (and :func:`atomic_path`, for writers that open the file) writes to a temporary file in the target folder, flushes it to disk
  and renames it over the target: a reader sees the old file or the complete new one,
  never a partial one, and a failure (full disk, read-only folder) leaves nothing behind
  and raises :class:`OutputError` naming the file.
- :func:`atomic_dir` does the same for a folder of files written by a writer that takes
  a folder (a model directory): the files appear once all are complete.
- :func:`output_stems` gives each input a distinct output stem: its file name without
  the LAST suffix (``show.part1.mp4`` -> ``show.part1``), and, when two inputs would get
  the same stem (``d1/clip.wav``, ``d2/clip.wav``), a stem derived from the whole path;
  with ``uri_safe=True`` the stems also have no white space (RTTM uris cannot hold any).
- :func:`remove_temporaries` deletes what :func:`atomic_write` left behind when its
  process was killed (SIGKILL gives it no chance to clean up).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Union

PathLike = Union[str, Path]


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _umask_mode()


class OutputError(OSError):
    """An output that could not be written (the message names the file and the cause)."""


def _named(exc: OSError, path: Path) -> OutputError:
    """``exc`` as an :class:`OutputError` naming ``path`` (unchanged if it already is one)."""
    return exc if isinstance(exc, OutputError) else OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """``with atomic_path(path) as tmp: save(tmp)``: for writers that open the file
    themselves (``np.savez``, ``savefig``); ``tmp`` is renamed over ``path`` on success."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp_name, _FILE_MODE)  # mkstemp makes 0600; outputs get the usual umask mode
        yield Path(tmp_name)
        with open(tmp_name, "rb") as fp:
            os.fsync(fp.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise _named(exc, path) from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator:
    """``with atomic_write(path) as fp: fp.write(...)``: all or nothing at ``path``."""
    binary = "b" in mode
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": encoding})) as fp:
            yield fp


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """``with atomic_dir(out) as tmp: <write files into tmp>``: the files appear in ``out``
    only once all are written and flushed to disk, each by a rename (a writer that cannot
    write into a file object, e.g. a whole model directory). On failure nothing of this
    write is left in ``out`` and :class:`OutputError` names ``out``."""
    import shutil

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        yield tmp
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for f in files:
            with open(f, "rb") as fp:
                os.fsync(fp.fileno())
        path.mkdir(exist_ok=True)
        for f in files:
            target = path / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
    except OSError as exc:
        raise _named(exc, path) from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: PathLike, text: str) -> Path:
    with atomic_write(path) as fp:
        fp.write(text)
    return Path(path)


def write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as fp:
        fp.write(data)
    return Path(path)


def _slug(text: str) -> str:
    """Path text as a file-name stem: separators and spaces become ``_``."""
    return re.sub(r"[\s/\\:]+", "_", text).strip("_") or "input"


def output_stems(inputs: Sequence[PathLike], uri_safe: bool = False) -> Dict[str, str]:
    """Distinct output stems for ``inputs`` (keys: the inputs as given, as strings).

    The stem is the file name less its last suffix; inputs whose stems collide get the
    stem of their whole (resolved) path instead, e.g. ``d1_clip`` and ``d2_clip``. The
    same input given twice keeps one stem. ``uri_safe``: white space becomes ``_``
    (``my show ü.wav`` -> ``my_show_ü``), before collisions are looked for.
    """
    keys = [str(p) for p in inputs]
    plain = {k: Path(k).stem or Path(k).name for k in keys}
    if uri_safe:
        plain = {k: re.sub(r"\s+", "_", v) for k, v in plain.items()}
    resolved = {k: Path(k).expanduser().resolve() for k in keys}
    owners: Dict[str, set] = {}
    for k in keys:
        owners.setdefault(plain[k], set()).add(resolved[k])
    stems = {}
    for k in keys:
        if len(owners[plain[k]]) == 1:
            stems[k] = plain[k]
            continue
        common = os.path.commonpath([str(p.parent) for p in owners[plain[k]]])
        rel = Path(os.path.relpath(resolved[k], common))
        stems[k] = _slug(str(rel.with_suffix("")))
        if len({p.suffix for p in owners[plain[k]]}) > 1:  # d/clip.wav and d/clip.mp3
            stems[k] += "_" + rel.suffix.lstrip(".")
    return stems


def remove_temporaries(folder: PathLike, name: str = "*") -> int:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` for target file
    names matching ``name`` (a glob); returns how many were removed."""
    removed = 0
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def command_line(script: str, argv: Optional[Sequence] = None) -> str:
    """``python SCRIPT ARG ...``: the command that reproduces a report, recorded in it
    (``argv``: this process's arguments when not given)."""
    return " ".join(["python", script, *map(str, sys.argv[1:] if argv is None else argv)])


def write_json(path: PathLike, data, default=None) -> Path:
    """``data`` as indented JSON at ``path`` (parents created), all or nothing: a benchmark's
    or a command's report (``default``: as :func:`json.dumps`'s, e.g. ``float`` for numpy scalars)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fp:
        fp.write(json.dumps(data, indent=2, default=default) + "\n")
    return path
