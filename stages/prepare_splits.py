"""DVC stage prepare-splits: data/<dataset>/manifest.csv and metrics/data/<dataset>.json.

    python stages/prepare_splits.py [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.splits import prepare_all


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    prepare_all(load_params(args.params), params_file=args.params)


if __name__ == "__main__":
    sys.exit(run_main(main))
