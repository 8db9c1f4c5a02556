"""A PNG contact sheet per video: one row per face track, its aligned faces left to right.

Each row starts with a label (track id, time span, number of detections) followed by up
to ``per_track`` aligned crops evenly spread over the track. Detections without an
aligned crop show a grey tile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

from xmodal_diar.faces.types import FaceTrack

__all__ = ["contact_sheet", "save_contact_sheet"]

_LABEL_WIDTH = 150


def contact_sheet(tracks: Sequence[FaceTrack], *, per_track: int = 8, tile: int = 80, title: str = "") -> np.ndarray:
    """The sheet as an (H, W, 3) uint8 image."""
    from PIL import Image, ImageDraw

    if per_track < 1 or tile < 8:
        raise ValueError(f"per_track must be >= 1 and tile >= 8 pixels, got {per_track} and {tile}")
    header = 20 if title else 0
    rows = max(len(tracks), 1)
    width = _LABEL_WIDTH + per_track * (tile + 2)
    sheet = Image.new("RGB", (width, header + rows * (tile + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 4), title, fill="black")
    if not tracks:
        draw.text((4, header + tile // 2), "no face track", fill="black")
    for r, track in enumerate(tracks):
        y = header + r * (tile + 4) + 2
        label = f"track {track.track_id}\n{track.start:.1f}-{track.end:.1f} s\n{len(track.detections)} faces"
        draw.multiline_text((4, y + 4), label, fill="black")
        picks = np.unique(np.linspace(0, len(track.detections) - 1, min(per_track, len(track.detections))).round())
        for c, i in enumerate(picks.astype(int)):
            crop = track.detections[i].aligned
            if crop is None:
                face = Image.new("RGB", (tile, tile), (160, 160, 160))
            else:
                face = Image.fromarray(np.asarray(crop, dtype=np.uint8)).convert("RGB").resize((tile, tile))
            sheet.paste(face, (_LABEL_WIDTH + c * (tile + 2), y))
    return np.asarray(sheet)


def save_contact_sheet(
    tracks: Sequence[FaceTrack], path: Union[str, Path], *, per_track: int = 8, tile: int = 80, title: str = ""
) -> Path:
    """Write :func:`contact_sheet` as a PNG at ``path``."""
    from PIL import Image

    from xmodal_diar.outputs import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fp:
        Image.fromarray(contact_sheet(tracks, per_track=per_track, tile=tile, title=title)).save(fp, format="PNG")
    return path
