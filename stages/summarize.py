"""DVC stage summarize: metrics/runs/<run>.json, the headline row of each run for `dvc metrics show`.

    python stages/summarize.py [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.report import summarize


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    summarize(load_params(args.params))


if __name__ == "__main__":
    sys.exit(run_main(main))
