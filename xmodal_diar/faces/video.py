"""Video and image input for the face side: RGB uint8 frames sampled at a fixed rate.

Frames are decoded with PyAV (``av``, whose wheels carry their own FFmpeg), so mp4, mkv,
avi, webm ... all work without a system FFmpeg. Sampling keeps the first decoded frame
whose presentation time reaches each multiple of ``1 / fps`` (``fps=None``: every frame);
``frame_index`` is the index of the decoded frame in the video, ``time`` its timestamp in
seconds. Whatever the pixel format (grey, yuv, rgba), frames come out as ``(H, W, 3)``
RGB uint8. Failures raise :class:`VideoError` naming the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, Path]


class VideoError(ValueError):
    """A video (or image) that cannot be turned into RGB frames."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float  #: seconds (0.0 when the container does not say)
    fps: float  #: average frame rate of the video stream
    width: int
    height: int
    frames: int  #: number of frames the container announces (0 when unknown)


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``image`` as a contiguous ``(H, W, 3)`` uint8 RGB array.

    Grey ``(H, W)`` / ``(H, W, 1)`` images are replicated on three channels, an alpha
    channel is dropped; anything else raises ValueError naming ``name``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(
            f"{name}: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {image.shape}"
        )
    return np.ascontiguousarray(image)


def load_image(path: PathLike) -> np.ndarray:
    """An image file (jpg, png, pgm, ...) as ``(H, W, 3)`` RGB uint8 (grey images converted)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            return as_rgb(np.asarray(image.convert("RGB")), name=str(path))
    except (UnidentifiedImageError, OSError) as error:
        raise VideoError(f"{path}: not a readable image ({error})") from error


def _open(path: PathLike):
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:  # InvalidDataError, ... : corrupt or not a media file
        raise VideoError(
            f"{path}: cannot open as a video, the file is corrupt or not a media file ({error})"
        ) from error
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: the file has no video stream")
    return container


def video_info(path: PathLike) -> VideoInfo:
    """Duration, frame rate, size and announced frame count of the first video stream."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # av.time_base
        else:
            duration = 0.0
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            duration=duration,
            fps=float(rate) if rate else 0.0,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            frames=int(stream.frames or 0),
        )


#: ``on_frame(frame_index, time_s, thumbnail_rgb)``, called for every decoded frame (before
#: that frame is yielded, if sampled); :func:`~xmodal_diar.faces.embedding.iter_frame_detections`
#: reads a true return value as "a new shot starts here".
FrameCallback = Callable[[int, float, np.ndarray], object]


def iter_frames(
    path: PathLike,
    fps: Optional[float] = 5.0,
    *,
    size: Optional[Tuple[int, int]] = None,
    on_frame: Optional[FrameCallback] = None,
    thumbnail: Tuple[int, int] = (64, 64),
) -> Iterator[Tuple[int, float, np.ndarray]]:
    """Yield ``(frame_index, time_s, rgb)`` for frames sampled at ``fps`` (None: every frame).

    ``rgb`` is ``(H, W, 3)`` uint8 (scaled to ``size = (width, height)`` if given). Only
    sampled frames are converted to RGB, so a low ``fps`` costs little more than
    decoding. ``on_frame`` receives EVERY decoded frame as a small ``thumbnail`` (for
    shot-cut detection at frame accuracy). A bad ``fps`` or a missing file raise at once,
    a corrupt file when iteration starts.
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive or None (every frame), got {fps!r}")
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such video file")
    return _sampled_frames(path, None if fps is None else 1.0 / fps, size, on_frame, thumbnail)


def _sampled_frames(
    path: PathLike,
    period: Optional[float],
    size: Optional[Tuple[int, int]] = None,
    on_frame: Optional[FrameCallback] = None,
    thumbnail: Tuple[int, int] = (64, 64),
) -> Iterator[Tuple[int, float, np.ndarray]]:
    import av

    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        average = float(stream.average_rate) if stream.average_rate else 25.0
        tolerance = 0.1 / average  # a tenth of a frame: 25 fps sampled at 5 fps keeps every 5th frame
        next_time = 0.0
        try:
            for index, frame in enumerate(container.decode(stream)):
                time = float(frame.time) if frame.time is not None else index / average
                if on_frame is not None:
                    small = frame.to_ndarray(format="rgb24", width=thumbnail[0], height=thumbnail[1])
                    on_frame(index, time, small)
                if period is not None:
                    if time + tolerance < next_time:
                        continue
                    while next_time <= time + tolerance:
                        next_time += period
                scaled = {} if size is None else {"width": int(size[0]), "height": int(size[1])}
                yield index, time, as_rgb(frame.to_ndarray(format="rgb24", **scaled), name=f"{path} frame {index}")
        except av.FFmpegError as error:
            raise VideoError(f"{path}: decoding failed, the file is corrupt or truncated ({error})") from error
