"""DVC stage evaluate-roc-det: metrics/evaluate/<run>.json and plots/evaluate/ for every run in the params.

    python stages/evaluate.py [--params params.yaml]
"""
import sys

from deepfake_detect.config import stage_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.evaluate import evaluate_runs


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    evaluate_runs(*stage_params("evaluate-roc-det", args.params))


if __name__ == "__main__":
    sys.exit(run_main(main))
