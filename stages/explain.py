"""DVC stage explain: saliency, Grad-CAM and faithfulness per run -> plots/explain/, metrics/explain/.

    python stages/explain.py [--params params.yaml]
"""
import sys

from deepfake_detect.config import load_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.explain import run_stage


def main(argv=None):
    args = stage_parser(__doc__).parse_args(argv)
    run_stage(load_params(args.params))


if __name__ == "__main__":
    sys.exit(run_main(main))
