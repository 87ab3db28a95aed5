"""Video decoding (video.py, PyAV): evenly spaced frames, found by their content, in short and long videos
(the seek path), a phone's rotation flag, and undecodable files named."""
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from deepfake_detect import video


def write_video(path: Path, n: int, rate: int = 10, size=(64, 48), codec: str = "mpeg4", gop: int = 12,
                pictures=None) -> Path:
    """``n`` frames; frame k is grey level 8 * (k % 32) (or ``pictures[k % len(pictures)]``) so a decoded frame
    tells which one it is."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = gop
        for k in range(n):
            if pictures is None:
                arr = np.full((size[1], size[0], 3), 8 * (k % 32), np.uint8)
            else:
                arr = np.asarray(pictures[k % len(pictures)].convert("RGB").resize(size))
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _level(im: Image.Image) -> int:
    return int(round(np.asarray(im, np.float64).mean() / 8))


def test_frames_are_evenly_spaced_and_are_the_frames_they_say(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 30)  # 3 s at 10 fps
    frames = video.sample_frames(path, 5)
    # the middles of 5 stretches of 3 s: 0.3, 0.9, 1.5, 2.1, 2.7 s -> frames 3, 9, 15, 21, 27
    assert [f.index for f in frames] == [3, 9, 15, 21, 27]
    assert [f.time for f in frames] == pytest.approx([0.3, 0.9, 1.5, 2.1, 2.7])
    assert [_level(f.image) for f in frames] == [3, 9, 15, 21, 27]
    assert all(f.image.size == (64, 48) and f.image.mode == "RGB" for f in frames)
    # more frames asked for than there are: each frame once
    few = video.sample_frames(write_video(tmp_path / "short.mp4", 4), 16)
    assert [f.index for f in few] == [0, 1, 2, 3]


def test_long_video_seeks_and_still_finds_the_right_frames(tmp_path):
    path = write_video(tmp_path / "long.mp4", 200, rate=5, gop=5)  # 40 s, a keyframe a second
    frames = video.sample_frames(path, 2)  # 10 s and 30 s: 20 s apart, so the second is reached by a seek
    assert [f.index for f in frames] == [50, 150]
    assert [_level(f.image) for f in frames] == [50 % 32, 150 % 32]


def test_webm_and_avi(tmp_path):
    for name, codec in (("c.webm", "libvpx-vp9"), ("c.avi", "mpeg4")):
        frames = video.sample_frames(write_video(tmp_path / name, 10, codec=codec), 2)
        assert [_level(f.image) for f in frames] == [f.index for f in frames] == [2, 7]


def test_a_phone_video_flagged_as_turned_is_decoded_upright(tmp_path):
    """A portrait phone video: pictures stored landscape with a display matrix saying "turn 90 degrees
    clockwise" (PyAV's rotation -90). The frames come out as a player shows them."""
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(-90)
        arr = np.zeros((48, 64, 3), np.uint8)
        arr[:6] = 255  # white along the stored top
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    (frame,) = video.sample_frames(path, 1)
    shown = np.asarray(frame.image.convert("L"), np.float64)
    assert frame.image.size == (48, 64)  # portrait
    assert shown[:, -4:].mean() > 200 and shown[:, :-8].mean() < 30  # the stored top is now on the right


def test_upright_turns_as_the_display_matrix_says():
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    im.paste((255, 0, 0), (0, 0, 40, 2))  # red along the top
    assert video.upright(im, 0) is im
    turned = video.upright(im, 90)  # shown turned 90 degrees counter-clockwise: the top edge goes left
    assert turned.size == (20, 40) and np.asarray(turned)[:, 0, 0].min() == 255
    assert np.asarray(video.upright(im, -90))[:, -1, 0].min() == 255  # clockwise: the top goes right
    assert np.asarray(video.upright(im, 180))[-1, :, 0].min() == 255


def test_bad_videos_are_named(tmp_path):
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(video.BadVideoError, match=r"fake\.mp4: cannot decode video"):
        video.sample_frames(tmp_path / "fake.mp4")
    with av.open(str(tmp_path / "sound.mkv"), "w") as out:  # audio only
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    with pytest.raises(video.BadVideoError, match=r"sound\.mkv: no video stream"):
        video.sample_frames(tmp_path / "sound.mkv")
    assert video.is_video_file("A.MP4") and video.is_video_file("x.webm") and not video.is_video_file("x.png")


def test_a_video_cut_short_says_truncated(tmp_path, tiny_ckpt):
    """Issue 27, row 5: an mp4 cut in half gave 2 of 4 frames with status ok; nothing said truncated."""
    path = tmp_path / "whole.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:  # the index first: half still opens
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(40):
            arr = np.full((48, 64, 3), 8 * (k % 32), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    whole = video.sample_frames(path, 4)
    assert len(whole) == 4 and not whole.truncated and whole.status is None
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    frames = video.sample_frames(cut, 4)
    assert 0 < len(frames) < 4 and frames.truncated
    assert frames.status == f"truncated: {len(frames)} of 4 frames decoded"
    short = video.sample_frames(write_video(tmp_path / "short.mp4", 4), 16)  # fewer frames than asked: not cut
    assert len(short) == 4 and short.status is None
    from deepfake_detect.predict import PredictOptions, predict_files

    rows = predict_files(tiny_ckpt, [str(cut)], options=PredictOptions(device="cpu", precision="fp32", crop="whole",
                                                                      frames=4, progress=False))
    assert [r["status"] for r in rows] == [f"truncated: {len(frames)} of 4 frames decoded (the file is cut short; "
                                           "re-export it)"] and rows[0]["p_fake"] in ("", None)
