"""DVC stage group evaluate-roc-det (one stage per run): metrics/evaluate/<run>.json, the run's test scores and
ROC/DET datapoints and figure.

    python stages/evaluate.py simplenet-fakes [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.evaluate import run_stage


def main(argv=None):
    args = stage_parser(__doc__, per_run=True).parse_args(argv)
    run_stage(load_params(args.params), args.run)


if __name__ == "__main__":
    sys.exit(run_main(main))
