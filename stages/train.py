"""DVC training stages (one per run; `runs` in the params maps each run to its stage, and the run's params section
has the run's name): models/<run>.pt and metrics/train/<run>/.

    python stages/train.py simplenet-fakes [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.train import run_stage


def main(argv=None):
    args = stage_parser(__doc__, per_run=True).parse_args(argv)
    run_stage(load_params(args.params), args.run)


if __name__ == "__main__":
    sys.exit(run_main(main))
