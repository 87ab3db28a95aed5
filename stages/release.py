"""DVC stage release: the shipped detectors, one per task, each picked on validation AUC among the runs trained on
its dataset, exported as float16 with a model card (JSON + Markdown) into the package's detectors/ folder.

    python stages/release.py --task faceswap=fakes --task generated=synthetic \
        --reals ../../shared/data/diffusion_faces/real --out ../src/deepfake_detect/detectors [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.release import AUC_TOLERANCE, ReleaseOptions, run_stage


def _task(text: str) -> tuple[str, str]:
    task, sep, dataset = text.partition("=")
    if not sep or not task or not dataset:
        raise ValueError(f"--task takes NAME=DATASET (e.g. faceswap=fakes), got {text!r}")
    return task, dataset


def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("--task", action="append", type=_task, required=True,
                    help="NAME=DATASET: a shipped detector and the dataset its candidate runs trained on")
    ap.add_argument("--reals", action="append", default=[],
                    help="a folder of real images: its false-positive rate goes on every card (repeatable)")
    ap.add_argument("--out", required=True, help="folder of the shipped .pt, .json and .md files")
    ap.add_argument("--max-total-mb", type=float, default=25.0,
                    help="the most the shipped .pt files may take together (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=64, help="scoring batch size (default: %(default)s)")
    ap.add_argument("--auc-tolerance", type=float, default=AUC_TOLERANCE,
                    help="how far the shipped weights' test AUC may be from the evaluate JSON's, which the card "
                         "copies (default: %(default)s)")
    ap.add_argument("--max-source-fpr", type=float, default=None,
                    help="the threshold: the most any kind of real photo of validation may be called fake (the "
                         "worst sets it; default: the checkpoint's own threshold)")
    ap.add_argument("--threshold-reals", action="append", default=[],
                    help="a dataset whose validation reals, per source, also bound --max-source-fpr (repeatable)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    # fp32: the precision predict and the API score in by default, so the threshold is set on the scores users get
    run_stage(params, args.task, args.reals, args.out, ReleaseOptions(
        batch_size=args.batch_size, precision="fp32", check_precision=params["evaluate-roc-det"]["precision"],
        auc_tolerance=args.auc_tolerance,
        max_total_mb=args.max_total_mb, max_source_fpr=args.max_source_fpr,
        threshold_reals=tuple(args.threshold_reals)))


if __name__ == "__main__":
    sys.exit(run_main(main))
