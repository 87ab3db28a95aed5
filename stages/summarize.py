"""DVC stage summarize, over every run: metrics/runs/<run>.json (the headline rows of `dvc metrics show`),
metrics/summary/cross_dataset.json and the all-runs figures in plots/summary/.

    python stages/summarize.py [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.summary import run_stage


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    run_stage(load_params(args.params))


if __name__ == "__main__":
    sys.exit(run_main(main))
