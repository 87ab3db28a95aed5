"""DVC stage prepare-splits: data/<dataset>/manifest.csv, metrics/data/<dataset>.json, plots/data/<dataset>.png.

    python stages/prepare_splits.py [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.splits import run_stage


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    run_stage(load_params(args.params))


if __name__ == "__main__":
    sys.exit(run_main(main))
