"""Video files in, a few evenly spaced frames out, with PyAV (``av`` on PyPI, which ships its own FFmpeg).

``sample_frames(path, n)`` decodes ``n`` frames at evenly spaced times, each as an upright RGB image (a
phone's rotation flag applied, as for photos' EXIF orientation). Frames are decoded in order; a gap of more
than ``SEEK_GAP`` seconds to the next sample is skipped by seeking to the keyframe before it, so a long video
costs about ``n`` short decodes, not the whole file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from PIL import Image

from .errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
FRAMES = 16  # default frames per video: DFDC solutions scored 16-32 per 10 s clip
SEEK_GAP = 5.0  # seconds: closer samples are reached by decoding on, farther ones by seeking


class BadVideoError(UserError, ValueError):
    """A video file that cannot be decoded; the message names the file."""


class Frames(list):
    """The frames ``sample_frames`` decoded (a list of ``Frame``), with how many were asked for and whether the
    video ended before a sample time its header promised (``truncated``: a file cut short)."""

    def __init__(self, frames=(), asked: int = 0, truncated: bool = False):
        super().__init__(frames)
        self.asked, self.truncated = int(asked), bool(truncated)

    @property
    def status(self) -> str | None:
        """None, or ``"truncated: 2 of 4 frames decoded"`` for a video that ended before its stated length."""
        return f"truncated: {len(self)} of {self.asked} frames decoded" if self.truncated else None


@dataclass(frozen=True)
class Frame:
    index: int  # frame number from the start (time x frame rate)
    time: float  # seconds from the start
    image: Image.Image


def is_video_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


def upright(im: Image.Image, rotation: int) -> Image.Image:
    """The frame as a player shows it: ``rotation`` is PyAV's ``VideoFrame.rotation``, the angle (degrees,
    counter-clockwise) by which the display matrix turns the stored picture."""
    r = int(round(rotation / 90.0)) % 4
    return im if r == 0 else im.transpose((None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                           Image.Transpose.ROTATE_270)[r])


def sample_frames(path: str | os.PathLike, n: int = FRAMES) -> Frames:
    """``n`` frames at the middles of ``n`` equal stretches of the video (fewer when it has fewer frames; fewer
    and ``truncated`` when it ends before the length its header states: ``Frames.status`` says so)."""
    import av

    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise BadVideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = _sample(container, stream, int(n))
    except av.FFmpegError as e:
        raise BadVideoError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e
    if not frames:
        raise BadVideoError(f"{path}: no frame decodes")
    return frames


def _sample(container, stream, n: int) -> Frames:
    tb = float(stream.time_base)
    start = stream.start_time * tb if stream.start_time is not None else 0.0
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    if stream.duration:
        duration = stream.duration * tb
    elif container.duration:
        duration = container.duration / 1e6  # AV_TIME_BASE
    else:  # no duration in the headers (some WebM, raw streams): count the packets
        duration = sum(1 for p in container.demux(stream) if p.size) / rate
        container.seek(0)
    duration = max(duration, 1.0 / rate)
    targets = [start + duration * (i + 0.5) / n for i in range(n)]
    frames, truncated = Frames(asked=n), False
    decoded, now = container.decode(stream), start
    for t in targets:
        if t - now > SEEK_GAP:
            container.seek(int(t / tb), stream=stream, backward=True, any_frame=False)
            decoded = container.decode(stream)
        for f in decoded:
            now = f.time if f.time is not None else now + 1.0 / rate
            if now >= t - 0.5 / rate:
                frames.append(Frame(int(round((now - start) * rate)), now - start, upright(f.to_image(), f.rotation)))
                break
        else:  # the video ended before this time: cut short when that is more than a frame past its last frame
            truncated = t - now > 1.5 / rate  # (a short video's later samples fall on frames already taken)
            break
    frames.truncated = truncated
    return frames
