"""DVC training stages (train-simplenet-fakes, train-simplenet-synth, finetune-xception,
train-competition): one script; the stage name picks the params section.

    python stages/train.py train-simplenet-fakes [--params params.yaml]
"""
import sys

from deepfake_detect.config import TRAIN_STAGES, stage_params, stage_parser
from deepfake_detect.errors import run_main
from deepfake_detect.train import fit


def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("stage", choices=TRAIN_STAGES)
    args = ap.parse_args(argv)
    params, cfg = stage_params(args.stage, args.params)
    fit(cfg, params)


if __name__ == "__main__":
    sys.exit(run_main(main))
