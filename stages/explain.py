"""DVC stage group explain (one stage per run): saliency, Grad-CAM and faithfulness -> plots/explain/<run>_*.png,
metrics/explain/<run>.json.

    python stages/explain.py simplenet-fakes [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.explain import run_stage


def main(argv=None):
    args = stage_parser(__doc__, per_run=True).parse_args(argv)
    run_stage(load_params(args.params), args.run)


if __name__ == "__main__":
    sys.exit(run_main(main))
