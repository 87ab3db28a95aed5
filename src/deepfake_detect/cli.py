"""The ``deepfake-detect`` command: ``get_args_parser()`` builds every sub-command, ``main(argv)`` runs one.

Each ``_cmd_*`` function calls the package function that does the work. Package modules are imported
inside those functions (torch, sklearn and matplotlib are slow to import), so ``deepfake-detect --help``
and argument errors stay fast.
"""
from __future__ import annotations

import argparse
import sys

# The choices below are literals so that building the parser imports nothing heavy; tests/test_cli.py
# checks that they match data.SPLITS and demo.DEMO_KINDS.
SPLITS = ("train", "val", "test")
DEMO_KINDS = ("fakes", "synthetic")
PRECISIONS = ("auto", "fp32", "bf16")  # detector.PRECISIONS
TTA_CHOICES = ("checkpoint", "none", "flip", "flip_shift")  # "checkpoint" + engine.TTA_MODES
CROPS = ("auto", "faces", "whole")  # predict.CROPS
FORMATS = ("csv", "json")  # predict.FORMATS
FRAMES = 16  # video.FRAMES
MIN_PER_CLASS = 10  # preflight.MIN_PER_CLASS: fewer real or fake images than this, no AUC
MAX_FRAMES = 300  # --frames: at most this many frames per video (each decoded frame is held: ~3.6 MB at 720p)
NOTHING_SCORED = 3  # predict.NOTHING_SCORED
CROP_SIZE = (32, 1024)  # crop-faces --size: crop.SIZE, the range of the params key image_size
CROP_MARGIN = (-0.5, 3.0)  # crop-faces --margin: crop.MARGIN


# ----------------------------------------------------------------------------- the commands
def _cmd_prepare(args) -> None:
    from .config import load_params
    from .splits import run_stage

    run_stage(load_params(args.params))


def _cmd_train(args) -> None:
    from .config import load_params
    from .train import run_stage

    run_stage(load_params(args.params), args.run)


def _cmd_crop_faces(args) -> None:
    from .crop import crop_folder

    crop_folder(args.src, args.dst, size=args.size, margin=args.margin, all_faces=args.all_faces,
                progress=not args.quiet, replace=args.replace)


def _cmd_demo(args) -> None:
    from .demo import DemoOptions, generate_dataset

    generate_dataset(args.out, kind=args.kind, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                     options=DemoOptions(image_size=args.image_size, seed=args.seed))
    print(f"wrote {args.kind} demo data to {args.out}")


def _cmd_report(args) -> None:
    from .tables import report

    print(report(args.readme, check=args.check, write=args.write))


def _cmd_evaluate(args) -> None:
    from .io import check_writable, write_json
    from .predict import check_new_file, check_not_package, evaluate_folder, terminal_text

    if args.out:  # before the scoring, not after it
        check_not_package(args.out)
        check_writable(args.out)
        check_new_file(args.out, args.force)
    m = evaluate_folder(args.model, args.data, args.split, args.bootstrap, _options(args))
    if m["skipped"]:
        print(f"skipped {m['n_skipped']} file(s):\n  " + "\n  ".join(map(terminal_text, m["skipped"])), file=sys.stderr)
    for k, v in m.items():
        if k != "skipped":
            print(f"{k:>20}: {v:.4f}" if isinstance(v, float) else f"{k:>20}: {terminal_text(str(v))}")
    if args.out:
        write_json(args.out, m)
        print(f"wrote {args.out}")


def _options(args):
    """predict.PredictOptions from the options evaluate and predict share."""
    from .predict import PredictOptions

    return PredictOptions(device=args.device, precision=args.precision, tta=args.tta, crop=args.crop,
                          face_margin=args.face_margin, frames=args.frames, batch_size=args.batch_size,
                          num_workers=args.workers, progress=not args.quiet,
                          per_frame=getattr(args, "per_frame", False),
                          min_per_class=getattr(args, "min_per_class", MIN_PER_CLASS))


def _cmd_predict(args) -> int:
    from .io import check_writable
    from .predict import NOTHING_SCORED, OK, check_new_file, check_not_package, predict_files

    if args.out:
        check_not_package(args.out)
        check_writable(args.out)  # a folder or an unwritable place is named as such, first
        check_new_file(args.out, args.force)
    rows = predict_files(args.model, args.paths, args.out, args.cam, args.format, _options(args))
    return 0 if any(r["status"] == OK for r in rows) else NOTHING_SCORED


def _cmd_explain(args) -> None:
    from .checkpoint import run_checkpoint
    from .config import RUNS, load_params
    from .explain import run_stage

    params = load_params(args.params)
    runs = args.runs or list(params[RUNS])
    for run in runs:  # every checkpoint found before any work
        run_checkpoint(params, run)
    for run in runs:
        run_stage(params, run)


def _cmd_exps(args) -> None:
    from .exps import experiments

    print(experiments(args.pipeline, args.metric, args.all_commits))


def _cmd_serve(args) -> None:
    from .serve import serve

    serve(args.host, args.port, args.allow_remote, args.max_upload_mb, args.device, args.precision)


def _cmd_plots(args) -> None:
    from .plots.page import write_page

    path = write_page(args.out, args.revs)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- the arguments
def _int_at_least(low: int):
    """An argparse type: an integer >= ``low``; anything else is a usage error naming the option and the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return parse


def _number_in(kind: type, what: str, low: float, high: float):
    """An argparse type: a ``kind`` (int or float) in [low, high]; anything else is a usage error naming the range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {what} in [{low:g}, {high:g}], got {text!r}")
        return value

    return parse


def _int_in(low: int, high: int):
    return _number_in(int, "an integer", low, high)


def _add_pipeline_commands(sub) -> None:
    """prepare-splits and train: the pipeline's stages, as params.yaml sets them."""
    p = sub.add_parser("prepare-splits", help="write split manifests for the datasets in params.yaml")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train one run of params.yaml (a key of its runs)")
    p.add_argument("run")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_train)


def _add_crop_faces(sub) -> None:
    p = sub.add_parser("crop-faces", help="a dataset of face crops from uncropped photos (then: prepare-splits)")
    p.add_argument("src", help="a folder of photos (course layout train|val|test/real|fake, or real/ + fake/)")
    p.add_argument("dst", help="where the crops go, in the same layout (set data.<name>.source to it)")
    p.add_argument("--size", type=_int_in(*CROP_SIZE), default=224,
                   help=f"crop size in px, {CROP_SIZE[0]} to {CROP_SIZE[1]} (default: %(default)s)")
    p.add_argument("--margin", type=_float_in(*CROP_MARGIN), default=0.35,
                   help="crop side = (1 + margin) x the face box's longer side (default: %(default)s)")
    p.add_argument("--all-faces", action="store_true", help="one crop per face (default: the largest face only)")
    p.add_argument("--replace", action="store_true",
                   help="empty DST first when it holds an earlier crop-faces output (default: DST must be empty)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_crop_faces)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="write a procedural demo dataset in the course layout")
    p.add_argument("out")
    p.add_argument("--kind", choices=DEMO_KINDS, default="fakes")
    p.add_argument("--n-train", type=_int_at_least(2), default=300)
    p.add_argument("--n-val", type=_int_at_least(2), default=90)
    p.add_argument("--n-test", type=_int_at_least(2), default=90)
    p.add_argument("--image-size", type=_int_at_least(32), default=128)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.set_defaults(func=_cmd_demo)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="the README's results tables, generated from the metrics files")
    p.add_argument("--readme", default="README.md")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail when README.md's tables differ")
    mode.add_argument("--write", action="store_true", help="rewrite README.md's tables")
    p.set_defaults(func=_cmd_report)


def _add_scoring_options(p, model_required: bool = True) -> None:
    """The options evaluate and predict share: the checkpoint and how to run it."""
    if model_required:
        p.add_argument("--model", required=True, help="checkpoint, e.g. models/simplenet-fakes.pt, or a shipped "
                                                      "detector: faceswap | generated")
    else:
        p.add_argument("--model", help="checkpoint, or a shipped detector: faceswap | generated (default: both "
                                       "shipped detectors; fake when either fires)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): bf16 on CUDA, fp32 on a CPU (the same answer on every CPU) | fp32 | bf16")
    p.add_argument("--batch-size", type=_int_at_least(1), default=64)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present")
    p.add_argument("--workers", type=_int_at_least(-1), default=-1,
                   help="data-loader processes (-1: sized to the machine, 0: in this process)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (scoring, Grad-CAM)")
    p.add_argument("--tta", choices=TTA_CHOICES, default="checkpoint",
                   help="test-time augmentation: the checkpoint's own (default), none, flip, or flip_shift "
                        "(flips and +-1/32-side translations); p(fake) is averaged over the views")


def _float_in(low: float, high: float):
    return _number_in(float, "a number", low, high)


def _add_picture_options(p) -> None:
    """What evaluate and predict score in each picture and video."""
    p.add_argument("--crop", choices=CROPS, default="auto",
                   help="faces: detect every face and score a square crop of each, framed like the checkpoint's "
                        "training images (a picture that already is a face crop is scored as it is); whole: the "
                        "picture unchanged, squashed to the model's size; auto (default): faces when the "
                        "checkpoint was trained on face crops, else whole")
    p.add_argument("--face-margin", type=_float_in(-0.5, 3.0), default=None, metavar="M",
                   help="crop side = (1 + M) x the face box's longer side (default: the checkpoint's own "
                        "framing, else 0.35)")
    p.add_argument("--frames", type=_int_in(1, MAX_FRAMES), default=FRAMES,
                   help=f"frames per video, evenly spaced, 1 to {MAX_FRAMES} (default: %(default)s); a video's p(fake) "
                        "is the mean of its face scores")


def _add_scoring_commands(sub) -> None:
    """evaluate and predict: any checkpoint on any images."""
    p = sub.add_parser("evaluate", help="score a checkpoint on a labelled folder (AUC, EER, AP, acc ...)")
    _add_scoring_options(p)
    p.add_argument("--data", required=True,
                   help="folder with real/ and fake/, a course-layout split folder, or a course-layout root")
    p.add_argument("--split", choices=SPLITS, default="test", help="split used when --data is a course-layout root")
    p.add_argument("--bootstrap", type=_int_at_least(0), default=1000,
                   help="resamples for the AUC 95 %% interval (0: off)")
    p.add_argument("--out", help="write the metrics to this JSON file (not over a file that is not an earlier "
                                 "evaluate output, unless --force)")
    p.add_argument("--force", action="store_true", help="let --out replace an existing file")
    p.add_argument("--min-per-class", type=_int_at_least(1), default=MIN_PER_CLASS,
                   help="report no AUC, EER or AP of fewer real or fake images than this (default: %(default)s, "
                        "the evaluate-roc-det stage's rule)")
    _add_picture_options(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="p(fake) per face for images, videos or folders",
                       description="Score every face in images and videos. Exit status: 0 when something was "
                                   f"scored, {NOTHING_SCORED} when nothing could be (the reasons are still "
                                   "written), 2 on a usage or input error.")
    _add_scoring_options(p, model_required=False)
    p.add_argument("paths", nargs="+", metavar="PATH", help="images, videos or folders (searched recursively)")
    p.add_argument("--out", help="write the rows to this .csv or .json file (default: one line per face on stdout); "
                                 "never over a file that is not an earlier predict output (unless --force), nor "
                                 "inside the package")
    p.add_argument("--force", action="store_true", help="let --out replace an existing file")
    p.add_argument("--format", choices=FORMATS,
                   help="rows as csv or json (on stdout without --out; with --out it must match its suffix)")
    p.add_argument("--cam", metavar="DIR", help="also write a Grad-CAM overlay of every scored face to DIR")
    p.add_argument("--per-frame", action="store_true", help="videos: a row per face in each sampled frame too")
    _add_picture_options(p)
    p.set_defaults(func=_cmd_predict)


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="saliency, Grad-CAM and faithfulness figures/metrics per run")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--runs", nargs="+", help="runs to explain (default: every run of runs in params.yaml)")
    p.set_defaults(func=_cmd_explain)


def _add_plots(sub) -> None:
    p = sub.add_parser("plots", help="every DVC plot on one offline HTML page (no CDN)",
                       description="Render `dvc plots show` (or `dvc plots diff REV ...`) to one "
                                   "self-contained HTML page: charts as inline SVG, images embedded.")
    p.add_argument("revs", nargs="*", help="git revisions to compare, as for `dvc plots diff` "
                                           "(none: the workspace, as `dvc plots show`)")
    p.add_argument("--out", default="dvc_plots/offline.html", help="the page to write (default: %(default)s)")
    p.set_defaults(func=_cmd_plots)


def _add_exps(sub) -> None:
    p = sub.add_parser("exps", help="the DVC experiments as one table: params changed, a headline metric per run",
                       description="`dvc exp show` in one readable table: a row per commit and experiment, the "
                                   "params each experiment changed, and one headline metric of every run.")
    p.add_argument("--pipeline", choices=("demo", "real"), default="demo")
    p.add_argument("--metric", default="auc", help="a headline column of metrics/runs/<run>.json (default: auc)")
    p.add_argument("-A", "--all-commits", action="store_true", help="every commit's experiments, not only HEAD's")
    p.set_defaults(func=_cmd_exps)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="a local web page and HTTP API: drop photos and videos, see every face scored",
                       description="Serve the page and the HTTP API (/api/v1/predict, /api/v1/detectors, /healthz; "
                                   "OpenAPI docs at /docs) with both shipped detectors, loaded once. Nothing is kept "
                                   "after a response. docs/serve.md")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=_int_in(1, 65535), default=8000, help="(default: %(default)s)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than localhost (anyone who reaches it can upload; no login, no TLS)")
    p.add_argument("--max-upload-mb", type=_float_in(0.001, 10000.0), default=50.0,
                   help="largest upload accepted, per file, in MB (default: %(default)s; more: 413)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as for predict")
    p.set_defaults(func=_cmd_serve)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Every sub-command of ``deepfake-detect``; each sets ``func``, the ``_cmd_*`` function that runs it."""
    ap = argparse.ArgumentParser(prog="deepfake-detect", description="Train, evaluate and explain deepfake detectors.",
                                 add_help=add_help)
    sub = ap.add_subparsers(dest="command", required=True)
    _add_pipeline_commands(sub)
    _add_demo(sub)
    _add_crop_faces(sub)
    _add_report(sub)
    _add_scoring_commands(sub)
    _add_explain(sub)
    _add_plots(sub)
    _add_exps(sub)
    _add_serve(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) and run the sub-command; a user error is one line and exit 2, and
    a sub-command may return its own exit status (predict: ``NOTHING_SCORED``)."""
    from .errors import run_main

    status = [0]

    def _run(argv):
        args = get_args_parser().parse_args(argv)
        if getattr(args, "device", None) == "cuda":  # say --device, not the params key, when there is no GPU
            from .engine import resolve_device

            resolve_device("cuda", "--device")
        status[0] = args.func(args) or 0

    return run_main(_run, argv) or status[0]


if __name__ == "__main__":
    sys.exit(main())
