"""``deepfake-detect serve``: a local web page and HTTP API over the shipped detectors (FastAPI + uvicorn).

The page (``web/``: plain HTML, CSS and JS, no build step) and the API it uses:

* ``POST /api/v1/predict``: multipart ``files``; the rows of ``deepfake-detect predict --format json`` (one per
  face, with its ``box`` and scored ``region``; per frame and a ``mean`` row for a video), each with ``file`` (the
  upload's index) and ``path`` = the upload's file name (a label only); ``files`` (kind, size of each upload),
  ``csv`` (the same rows as the CLI's CSV) and, with ``?gradcam=1``, each face row's Grad-CAM figures as base64
  PNG per detector (``gradcam``).
* ``GET /api/v1/detectors``: the model cards; ``GET /cards/<name>``: a card for people (markdown as text).
* ``GET /healthz``.

Scoring is ``predict.predict_files``, the CLI's own code, on the detectors loaded once at start. Each request's
uploads are written under server-chosen names into a private ``tempfile.TemporaryDirectory`` that is removed
before the response leaves; a client's file name is never a path. An upload is checked by its content (PIL reads
a picture's header, PyAV a video's container), not its name; the size limit answers 413, an empty upload, a
decompression bomb or content that is neither picture nor video 400, each with a one-line message (the CLI's
where the CLI has one). One request is scored at a time (``SCORING``: the one copy of the models, Grad-CAM's hooks
on them), at most ``max_queue`` wait (then 503). Bound to localhost, requests naming another host or coming from
another site's page are refused (DNS rebinding, cross-site uploads).
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .errors import UserError

WEB = Path(__file__).resolve().parent / "web"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD_MB = 50.0  # per file; --max-upload-mb
MAX_FILES = 8  # per request
MAX_QUEUE = 16  # requests waiting for the models; more: 503
MAX_FRAMES = 64
IMAGE_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
VIDEO_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi"}
ORIENTATION = 0x0112  # EXIF: 5-8 turn the picture by 90 degrees


class ServeError(UserError, ValueError):
    """An option of ``serve`` that cannot work (a remote host without --allow-remote, ...)."""


class UploadError(Exception):
    """An upload refused: ``status`` (400, 413, 503) and a one-line message naming the file."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _BodyTooLarge(BaseException):  # BaseException: the form parser's `except Exception` must not turn it into 400
    pass


@dataclass
class Settings:
    """What a running server allows: ``max_upload_bytes`` per file, ``max_files`` per request, ``max_queue``
    requests waiting, ``allowed_hosts`` (None: any; the Host header's name must be one of them)."""

    max_upload_bytes: int = int(MAX_UPLOAD_MB * 1e6)
    max_files: int = MAX_FILES
    max_queue: int = MAX_QUEUE
    allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes * self.max_files + 65_536  # + the multipart framing


def label_of(name: str | None, i: int) -> str:
    """The upload's file name as a label: its last component, printable, at most 200 characters."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = "".join(c for c in base if c.isprintable())[:200]
    return base or f"upload-{i + 1}"


def _video_ext(path: Path) -> str | None:
    import av

    try:
        with av.open(str(path)) as c:
            return VIDEO_FORMATS.get(c.format.name) if c.streams.video else None
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None


def sniff(path: Path, label: str) -> tuple[str, str, tuple[int, int] | None]:
    """(kind, the suffix predict reads it by, upright (width, height) of a picture) of an upload, by its content;
    UploadError 400 when it is empty, a decompression bomb, or neither a picture nor a video."""
    from PIL import Image

    from .data import is_image_file
    from .video import is_video_file

    if path.stat().st_size == 0:
        raise UploadError(400, f"{label}: empty upload (0 bytes)")
    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
            turned = im.getexif().get(ORIENTATION) in (5, 6, 7, 8) if fmt in IMAGE_FORMATS else False
    except Image.DecompressionBombError as e:  # over twice PIL's pixel limit: what load_rgb says
        raise UploadError(400, f"{label}: cannot decode image ({type(e).__name__}: {e})") from e
    except (OSError, ValueError, SyntaxError) as e:
        why = e
    else:
        if fmt not in IMAGE_FORMATS:
            raise UploadError(400, f"{label}: not an image or video file ({fmt} pictures are not read; "
                                   "send JPEG, PNG, WebP, BMP or TIFF)")
        if w * h > (Image.MAX_IMAGE_PIXELS or float("inf")):  # PIL only warns up to twice its limit: refuse here
            raise UploadError(400, f"{label}: cannot decode image (DecompressionBombError: Image size ({w * h} "
                                   f"pixels) exceeds limit of {Image.MAX_IMAGE_PIXELS} pixels, could be "
                                   "decompression bomb DOS attack.)")
        return "image", IMAGE_FORMATS[fmt], (h, w) if turned else (w, h)
    ext = _video_ext(path)
    if ext is not None:
        return "video", ext, None
    # neither: the message the CLI gives a file of that name
    if is_image_file(label):
        msg = f"cannot decode image ({type(why).__name__}: {str(why).replace(str(path), label)})"
    elif is_video_file(label):
        msg = "cannot decode video (PyAV reads no video stream in it)"
    else:
        msg = "not an image or video file"
    raise UploadError(400, f"{label}: {msg}")


def cam_name(stem: str, row: dict, detector: str | None) -> str:
    """The file ``predict.write_cam_overlays`` writes for ``row``'s face (``detector``: its name when several)."""
    frame = f"_f{row['frame']}" if row["frame"] is not None else ""
    face = "" if row["face"] == "whole" else f"_face{row['face']}"
    return f"{stem}{frame}{face}{'' if detector is None else '_' + detector}_cam.png"


class Scorer:
    """The detectors, loaded once, and the one lock every request's scoring takes."""

    def __init__(self, detectors, settings: Settings, frames: int):
        self.detectors = list(detectors)
        self.settings = settings
        self.frames = frames
        self.lock = threading.Lock()
        self.waiting = 0
        self.count = threading.Lock()

    def options(self, frames: int):
        from .predict import PredictOptions

        # in this process (no loader workers forked from a threaded server), no progress bars, a row per frame
        return PredictOptions(frames=frames, num_workers=0, progress=False, per_frame=True)

    def save(self, uploads, tmp: Path) -> list[dict]:
        """Each upload copied to ``tmp/upload-<i><suffix>`` (the suffix from its content), checked as it goes."""
        limit = self.settings.max_upload_bytes
        files = []
        for i, up in enumerate(uploads):
            label = label_of(up.filename, i)
            raw = tmp / f"upload-{i}"
            n = 0
            with open(raw, "wb") as f:
                while chunk := up.file.read(1 << 20):
                    n += len(chunk)
                    if n > limit:
                        raise UploadError(413, f"{label}: over the upload limit of {limit / 1e6:g} MB "
                                               "(deepfake-detect serve --max-upload-mb)")
                    f.write(chunk)
            kind, ext, size = sniff(raw, label)
            path = raw.rename(raw.with_name(raw.name + ext))
            files.append({"name": label, "kind": kind, "path": str(path), "size": list(size) if size else None,
                          "bytes": n})
        return files

    def score(self, uploads, gradcam: bool = False, frames: int | None = None) -> dict:
        """The answer to one predict request (see the module doc); UploadError for a refused upload."""
        from .predict import OK, TOO_SMALL, fields, predict_files, write_rows

        if not uploads:
            raise UploadError(400, "no files: send one or more pictures or videos as multipart field 'files'")
        if len(uploads) > self.settings.max_files:
            raise UploadError(400, f"{len(uploads)} files in one request; at most {self.settings.max_files}")
        with self.count:
            if self.waiting >= self.settings.max_queue:
                raise UploadError(503, f"busy: {self.waiting} requests are waiting; try again shortly")
            self.waiting += 1
        try:
            with tempfile.TemporaryDirectory(prefix="deepfake-detect-serve-") as tmp:
                tmp = Path(tmp)
                files = self.save(uploads, tmp)
                cams = tmp / "cam" if gradcam else None
                if cams is not None:
                    cams.mkdir()
                with self.lock, contextlib.redirect_stderr(io.StringIO()):  # the CLI's summary line: not a log
                    rows = predict_files(self.detectors, [f["path"] for f in files], out=tmp / "rows.json",
                                         cam_dir=cams, options=self.options(frames or self.frames))
                index = {f["path"]: i for i, f in enumerate(files)}
                names = [d.name for d in self.detectors]
                for r in rows:
                    i = index[r["path"]]
                    bad = r["status"] != OK and not r["status"].startswith("no face found") and \
                        TOO_SMALL not in r["status"]  # answers about the picture, not a bad upload
                    if bad:
                        raise UploadError(400, f"{files[i]['name']}: {r['status']}")
                    if cams is not None and r["status"] == OK and r["face"] != "mean":
                        stem = Path(r["path"]).stem
                        r["gradcam"] = {}
                        for n in names:
                            png = cams / cam_name(stem, r, n if len(names) > 1 else None)
                            if png.is_file():
                                r["gradcam"][n] = base64.b64encode(png.read_bytes()).decode("ascii")
                    r["path"], r["file"] = files[i]["name"], i
                csv_rows = [{k: v for k, v in r.items() if k not in ("file", "gradcam")} for r in rows]
                write_rows(csv_rows, tmp / "rows.csv", "csv", fields(self.detectors))
                csv_text = (tmp / "rows.csv").read_text("utf-8", "surrogateescape")
        finally:
            with self.count:
                self.waiting -= 1
        return {"rows": rows, "files": [{k: f[k] for k in ("name", "kind", "size", "bytes")} for f in files],
                "detectors": [d.name for d in self.detectors], "csv": csv_text}


def _card_summary(det) -> dict:
    card = det.card or {}
    return {"name": det.name, "task": card.get("task"), "threshold": det.threshold,
            "card_url": f"/cards/{det.name}", "not_for": card.get("not_for", []), "card": card}


class Guard:
    """ASGI middleware: a request body over ``settings.max_body_bytes`` gets 413 (by its Content-Length, or
    counted as it streams); with ``allowed_hosts``, a Host header naming another host 403 (DNS rebinding), and a
    POST from another site's page (its Origin) 403."""

    def __init__(self, app, settings: Settings):
        self.app, self.settings = app, settings

    @staticmethod
    async def _refuse(send, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _host_ok(self, host: str) -> bool:
        if self.settings.allowed_hosts is None:
            return True
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
        return name in self.settings.allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self._host_ok(headers.get("host", "")):
            return await self._refuse(send, 403, f"host {headers.get('host', '')!r} refused: this server answers "
                                                 "localhost only (start it with --host and --allow-remote)")
        origin = headers.get("origin")
        if scope["method"] == "POST" and origin and self.settings.allowed_hosts is not None:
            from urllib.parse import urlsplit

            if urlsplit(origin).netloc != headers.get("host"):
                return await self._refuse(send, 403, f"origin {origin} refused: only this server's own page may post")
        limit = self.settings.max_body_bytes
        size = headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limit:
            return await self._refuse(send, 413, f"request body of {int(size) / 1e6:.1f} MB is over the limit of "
                                                 f"{limit / 1e6:g} MB (deepfake-detect serve --max-upload-mb)")
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send, 413, f"request body over the limit of {limit / 1e6:g} MB "
                                              "(deepfake-detect serve --max-upload-mb)")


def create_app(detectors=None, settings: Settings | None = None, frames: int | None = None, device: str = "auto",
               precision: str = "auto"):
    """The ASGI app: the page, the API and the guard. ``detectors``: loaded ones (tests), else every shipped
    detector, loaded now, once."""
    from .detector import load_shipped
    from .video import FRAMES

    settings = settings or Settings()
    dets = list(detectors) if detectors is not None else load_shipped(device, precision)
    scorer = Scorer(dets, settings, frames or FRAMES)
    app = FastAPI(title="deepfake-detect", version="1",
                  description="p(fake) of every face in your pictures and videos, by the shipped detectors, on this "
                              "machine. Nothing is kept after a response.")
    app.state.scorer = scorer
    page_headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:",
                    "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(WEB / "index.html", headers=page_headers)

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "detectors": [d.name for d in dets], "waiting": scorer.waiting}

    @app.get("/api/v1/detectors")
    def detectors_():
        return {"detectors": [_card_summary(d) for d in dets]}

    @app.get("/cards/{name}", response_class=PlainTextResponse)
    def card(name: str):
        det = next((d for d in dets if d.name == name), None)
        md = det.path.with_suffix(".md") if det is not None and det.path is not None else None
        if md is None or not md.is_file():
            if det is not None and det.card:
                return PlainTextResponse(json.dumps(det.card, indent=1))
            raise HTTPException(404, f"no model card named {name!r}")
        return PlainTextResponse(md.read_text("utf-8"))

    @app.post("/api/v1/predict")
    async def predict(files: list[UploadFile] = File(..., description="pictures and videos"),
                      gradcam: bool = Query(False, description="add each face's Grad-CAM figures (base64 PNG)"),
                      frames: int = Query(None, ge=1, le=MAX_FRAMES, description="frames per video (default 16)")):
        try:
            return await run_in_threadpool(scorer.score, files, gradcam, frames)
        except UploadError as e:
            raise HTTPException(e.status, str(e)) from None
        except UserError as e:
            raise HTTPException(400, str(e)) from None

    return Guard(app, settings)


def check_host(host: str, allow_remote: bool) -> str | None:
    """None for a localhost ``host``; the warning to print for another with ``allow_remote``; ServeError without."""
    if host in LOCAL_HOSTS:
        return None
    if not allow_remote:
        raise ServeError(f"--host {host}: anything but localhost ({', '.join(LOCAL_HOSTS)}) exposes the page and the "
                         "API to the network; add --allow-remote to do it on purpose")
    return (f"warning: serving on {host}: anyone who can reach this machine can upload files and read the scores; "
            "there is no login and no TLS")


def serve(host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False,
          max_upload_mb: float = MAX_UPLOAD_MB, device: str = "auto", precision: str = "auto") -> None:
    """``deepfake-detect serve``: load the detectors once, then answer on ``host``:``port`` until interrupted."""
    import uvicorn

    warning = check_host(host, allow_remote)
    if warning:
        print(warning, file=sys.stderr)
    settings = Settings(max_upload_bytes=int(max_upload_mb * 1e6), allowed_hosts=None if warning else LOCAL_HOSTS)
    app = create_app(settings=settings, device=device, precision=precision)
    shown = f"[{host}]" if ":" in host else host
    print(f"deepfake-detect: the page is at http://{shown}:{port}/ (API docs at /docs); Ctrl-C stops it",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
