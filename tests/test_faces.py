"""Face detection and cropping (faces.py): the crop geometry worked by hand, the tight-crop rule, and MTCNN
itself on demo faces (found, in place when pasted into a larger picture, none in a blurred background)."""
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageFilter

from deepfake_detect import faces
from deepfake_detect.data import load_rgb

FRAMING = faces.Framing(scale=1.5, ox=0.0, oy=0.0)


def _face(x0, y0, x1, y1, p=0.99):
    return faces.Face((x0, y0, x1, y1), p)


def iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_crop_square_by_hand():
    # box 100x120 centred at (150, 160): side 1.5 x 120 = 180, from (60, 70)
    assert faces.crop_square(_face(100, 100, 200, 220), (800, 600), FRAMING) == (60, 70, 240, 250)
    # offsets are in box sides: oy -0.1 moves the centre up by 12 px
    assert faces.crop_square(_face(100, 100, 200, 220), (800, 600), faces.Framing(1.5, 0.0, -0.1)) == (60, 58, 240, 238)
    # at the edge: shifted inside, never padded
    assert faces.crop_square(_face(-20, 500, 80, 620), (800, 600), FRAMING) == (0, 420, 180, 600)
    # larger than the picture's shorter side: capped at it
    assert faces.crop_square(_face(300, 100, 700, 500), (800, 600), FRAMING) == (200, 0, 800, 600)


def test_regions_tight_crop_is_scored_whole_else_one_crop_per_face():
    assert faces.regions((128, 128), [], FRAMING) == []
    tight = faces.regions((128, 128), [_face(30, 25, 95, 105)], FRAMING)  # crop 120 px: 88 % of the picture
    assert tight == [faces.Region(1, (30, 25, 95, 105), (0, 0, 128, 128), True)]
    small = faces.regions((128, 128), [_face(50, 50, 80, 80)], FRAMING)  # crop 45 px: 12 %
    assert small == [faces.Region(1, (50, 50, 80, 80), (42, 42, 87, 87), False)]
    # a portrait photo filled by the face is cropped square, not squashed
    portrait = faces.regions((600, 900), [_face(50, 200, 550, 700)], FRAMING)
    assert portrait[0].crop == (0, 150, 600, 750) and not portrait[0].whole
    two = faces.regions((800, 600), [_face(100, 100, 300, 350), _face(500, 200, 650, 380)], FRAMING)
    assert [r.face for r in two] == [1, 2] and not any(r.whole for r in two)


def test_framing_of_checkpoint_and_margin():
    assert faces.Framing.of_checkpoint(SimpleNamespace(domain=None)) == faces.Framing()
    ckpt = SimpleNamespace(domain={"framing": {"scale": 2.0, "ox": -0.02, "oy": -0.07}})  # a Checkpoint's field
    assert faces.Framing.of_checkpoint(ckpt) == faces.Framing(2.0, -0.02, -0.07)
    assert faces.Framing.of_checkpoint(ckpt, margin=0.25) == faces.Framing(1.25, -0.02, -0.07)


def test_clipped_box():
    assert faces.clipped_box((-3.4, 10.6, 130.2, 90.0), (128, 128)) == [0, 11, 128, 90]


@pytest.fixture(scope="module")
def detector():
    return faces.FaceFinder()


def test_detector_finds_demo_faces_and_measures_their_framing(demo_faces, detector):
    pictures = [load_rgb(p) for p in demo_faces]
    found = [detector(im) for im in pictures]
    assert sum(len(f) == 1 for f in found) >= 10  # 11 of the 12 at MIN_CONFIDENCE 0.7
    for f in found:
        for face in f:
            x0, y0, x1, y1 = face.box
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128 and face.confidence >= faces.MIN_CONFIDENCE
    m = faces.measure_framing(pictures, detector)
    assert m["n_checked"] == 12 and m["face_crops"] is True
    assert 1.6 < m["framing"]["scale"] < 2.5  # the demo draws a face in about half of the picture


def test_detector_in_a_larger_picture_and_on_none(demo_faces, detector):
    face = load_rgb(demo_faces[1])
    bg = face.resize((800, 600)).filter(ImageFilter.GaussianBlur(40))
    pic = bg.copy()
    pic.paste(face, (500, 300))
    (alone,), (inside,) = detector(face), detector(pic)
    moved = (alone.box[0] + 500, alone.box[1] + 300, alone.box[2] + 500, alone.box[3] + 300)
    assert iou(moved, inside.box) > 0.8
    assert detector(bg) == []
    # a picture larger than DETECT_MAX_SIDE is detected on a smaller copy; boxes come back in its own pixels
    (big,) = detector(pic.resize((1600, 1200), Image.BILINEAR))
    assert iou(tuple(2 * v for v in inside.box), big.box) > 0.8
    assert detector(Image.new("RGB", (10, 10))) == []  # below MTCNN's smallest face


def test_detector_needs_facenet_pytorch(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_facenet(name, *args, **kwargs):
        if name == "facenet_pytorch":
            raise ImportError("No module named 'facenet_pytorch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_facenet)
    with pytest.raises(faces.FaceDetectorError, match=r"pip install facenet-pytorch==2.5.3.*--crop whole"):
        faces.FaceFinder()(Image.fromarray(np.zeros((64, 64, 3), np.uint8)))
