"""The HTTP API of `deepfake-detect serve` (FastAPI's TestClient): each endpoint; the server's answer for a picture
is `predict` on it (the same code, the same numbers); bad uploads get a 4xx with a one-line message and the server
keeps serving; a video gives its frame rows and its video row; the guard (host, origin, body size, queue)."""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deepfake_detect import cli
from deepfake_detect.detector import load_shipped
from deepfake_detect.predict import PredictOptions, predict_files
from deepfake_detect.serve import ServeError, Settings, check_host, create_app, label_of

URL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def detectors():
    return load_shipped("cpu")


@pytest.fixture(scope="module")
def client(detectors):
    return TestClient(create_app(detectors), base_url=URL)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    """The README's astronaut (a NASA photograph that ships with scikit-image)."""
    import skimage.data

    path = tmp_path_factory.mktemp("pics") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def post(client, *files, **params):
    return client.post("/api/v1/predict", params=params,
                       files=[("files", (name, data, "application/octet-stream")) for name, data in files])


def png_bomb(side: int = 20_000) -> bytes:
    """A 1-bit PNG of side x side black pixels: a few tens of kB that would decode to side² pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + side // 8)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def face_video(path: Path, picture: Image.Image, n: int = 8, size: int = 256) -> Path:
    """``n`` frames of ``picture`` at ``size`` px, MPEG-4 in MP4 (the way tests/test_video.py makes videos)."""
    arr = np.asarray(picture.convert("RGB").resize((size, size)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for _ in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def scores(rows):
    return [(r["face"], r["frame"], r["box"], r["region"], r["p_fake_faceswap"], r["p_fake_generated"], r["fired"],
             r["verdict"], r["status"]) for r in rows]


def assert_same_rows(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for k, v in w.items():
            if k == "path":
                continue
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, abs=1e-5), k
            else:
                assert g[k] == v, k


# ----------------------------------------------------------------------------- the endpoints
def test_healthz_and_detectors(client, detectors):
    assert client.get("/healthz").json() == {"status": "ok", "detectors": ["faceswap", "generated"], "waiting": 0}
    cards = client.get("/api/v1/detectors").json()["detectors"]
    assert [c["name"] for c in cards] == [d.name for d in detectors]
    for c, d in zip(cards, detectors):
        assert c["threshold"] == d.threshold and c["card"] == d.card and c["not_for"] == d.card["not_for"]
        assert c["not_for"]  # every card says what it is not for
        text = client.get(c["card_url"]).text
        assert text.startswith(f"# Detector `{d.name}`")
    assert client.get("/cards/nope").status_code == 404


def test_the_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and 'name="viewport"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for f in ("app.js", "style.css"):
        assert client.get(f"/static/{f}").status_code == 200
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/api/v1/predict", "/api/v1/detectors", "/healthz"}
    # a wheel carries the page
    import tomllib

    from conftest import REPO

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "web/*" in data["deepfake_detect"]


def test_a_picture_is_scored_as_predict_scores_it(client, detectors, astronaut, capsys):
    r = post(client, ("astronaut.png", astronaut.read_bytes()))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["files"] == [{"name": "astronaut.png", "kind": "image", "size": [512, 512],
                              "bytes": astronaut.stat().st_size}]
    assert body["detectors"] == ["faceswap", "generated"]
    rows = body["rows"]
    assert len(rows) >= 1 and all(r["path"] == "astronaut.png" and r["file"] == 0 for r in rows)
    face = rows[0]
    assert face["face"] == 1 and len(face["box"]) == 4 and face["status"] == "ok" and "gradcam" not in face
    # the same code as the CLI: predict_files on the file, and `deepfake-detect predict --format json` itself
    want = predict_files(detectors, [str(astronaut)], fmt="json",
                         options=PredictOptions(num_workers=0, progress=False, per_frame=True))
    assert_same_rows(rows, want)
    capsys.readouterr()
    argv = ["predict", str(astronaut), "--format", "json", "--quiet", "--device", "cpu", "--workers", "0"]
    assert cli.main(argv) == 0
    assert_same_rows(rows, json.loads(capsys.readouterr().out))
    # the CSV is the CLI's CSV of these rows, with the upload's name
    lines = body["csv"].splitlines()
    assert lines[0].startswith("path,frame,face,box,region,p_fake_faceswap") and len(lines) == len(rows) + 1
    assert lines[1].startswith(f"astronaut.png,,1,{' '.join(map(str, face['box']))},")


def test_content_not_name_decides(client, astronaut):
    """A PNG sent as .jpg is scored as the picture it is; a client's path is only a label."""
    r = post(client, ("../../etc/passwd.jpg", astronaut.read_bytes()))
    assert r.status_code == 200
    assert r.json()["files"][0]["name"] == "passwd.jpg" and r.json()["rows"][0]["path"] == "passwd.jpg"
    assert label_of("C:\\Users\\me\\a.png", 0) == "a.png" and label_of("", 2) == "upload-3"


def test_gradcam_on_request(client, astronaut):
    rows = post(client, ("astronaut.png", astronaut.read_bytes()), gradcam=1).json()["rows"]
    for r in rows:
        assert set(r["gradcam"]) == {"faceswap", "generated"}
        for png in r["gradcam"].values():
            im = Image.open(io.BytesIO(base64.b64decode(png)))
            assert im.format == "PNG" and min(im.size) > 50


def test_a_video_gives_frame_rows_and_a_video_row(client, astronaut, tmp_path):
    video = face_video(tmp_path / "clip.mp4", Image.open(astronaut), size=512)  # its face large enough to judge
    body = post(client, ("clip.mp4", video.read_bytes()), frames=4).json()
    assert body["files"][0]["kind"] == "video"
    rows = body["rows"]
    frames = [r for r in rows if r["frame"] is not None]
    assert len({r["frame"] for r in frames}) == 4 and all(r["status"] == "ok" and r["box"] for r in frames)
    mean = rows[-1]
    assert mean["face"] == "mean" and mean["frame"] is None and mean["status"] == "ok"
    assert mean["p_fake_faceswap"] == pytest.approx(np.mean([r["p_fake_faceswap"] for r in frames]))


def test_no_face_is_an_answer_not_an_error(client):
    buf = io.BytesIO()
    Image.new("RGB", (200, 150), (90, 120, 200)).save(buf, "JPEG")
    r = post(client, ("sky.jpg", buf.getvalue()))
    assert r.status_code == 200 and [x["status"] for x in r.json()["rows"]] == ["no face found"]


# ----------------------------------------------------------------------------- bad uploads
def test_bad_uploads_get_a_4xx_with_a_message_and_the_server_keeps_serving(client, detectors, astronaut):
    bad = [
        (("notes.jpg", b"Dear diary, this is not a picture.\n"),
         "notes.jpg: cannot decode image (UnidentifiedImageError: cannot identify image file 'notes.jpg')"),
        (("bomb.png", png_bomb()), "bomb.png: cannot decode image (DecompressionBombError: Image size (400000000 "
                                   "pixels) exceeds limit of"),
        (("empty.png", b""), "empty.png: empty upload (0 bytes)"),
        (("notes.txt", b"hello"), "notes.txt: not an image or video file"),
        (("clip.mp4", b"\0\0\0\x18ftypmp42 but then nothing"), "clip.mp4: cannot decode video"),
    ]
    for upload, message in bad:
        r = post(client, upload)
        assert r.status_code == 400, (upload[0], r.text)
        assert r.json()["detail"].startswith(message) and "\n" not in r.json()["detail"]
        assert "/tmp" not in r.json()["detail"]  # the server's own paths are not shown
    assert client.post("/api/v1/predict").status_code == 422  # no files at all: FastAPI names the field
    # too large: 413, by the file's size and by the request's Content-Length
    small = TestClient(create_app(detectors, Settings(max_upload_bytes=100_000, max_files=2)), base_url=URL)
    r = post(small, ("astronaut.png", astronaut.read_bytes()))
    assert r.status_code == 413 and r.json()["detail"].startswith("request body of 0.4 MB is over the limit")
    r = post(small, ("a.png", b"x" * 150_000))
    assert r.status_code == 413 and r.json()["detail"].startswith("a.png: over the upload limit of 0.1 MB")
    # streamed without a Content-Length: counted as it arrives
    part = b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
    r = small.post("/api/v1/predict", content=(c for c in [part] + [b"x" * 65536] * 50),
                   headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["detail"].startswith("request body over the limit of 0.265536 MB")
    # and after all that, a good request is answered
    assert post(client, ("astronaut.png", astronaut.read_bytes())).status_code == 200
    assert client.get("/healthz").json()["waiting"] == 0


def test_queue_host_and_origin_guards(detectors, astronaut):
    busy = TestClient(create_app(detectors, Settings(max_queue=0)), base_url=URL)
    r = post(busy, ("astronaut.png", astronaut.read_bytes()))
    assert r.status_code == 503 and r.json()["detail"].startswith("busy")
    app = create_app(detectors)
    assert TestClient(app, base_url="http://evil.example").get("/healthz").status_code == 403  # DNS rebinding
    assert TestClient(app, base_url="http://localhost:8000").get("/healthz").status_code == 200
    assert TestClient(app, base_url="http://[::1]:8000").get("/healthz").status_code == 200
    r = TestClient(app, base_url=URL).post("/api/v1/predict", headers={"origin": "http://evil.example"},
                                           files=[("files", ("a.png", astronaut.read_bytes()))])
    assert r.status_code == 403 and "origin" in r.json()["detail"]
    anywhere = create_app(detectors, Settings(allowed_hosts=None))
    assert TestClient(anywhere, base_url="http://10.1.2.3:8000").get("/healthz").status_code == 200


def test_binding_beyond_localhost_needs_allow_remote(capsys):
    assert check_host("127.0.0.1", False) is None and check_host("localhost", False) is None
    with pytest.raises(ServeError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert check_host("0.0.0.0", True).startswith("warning: serving on 0.0.0.0")
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
