"""DVC training stages (train-simplenet-fakes, train-simplenet-synth, finetune-xception,
train-competition): one script, the stage name picks the params.yaml section."""
import argparse

from deepfake_detect.config import TRAIN_STAGES, stage_params
from deepfake_detect.train import fit

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("stage", choices=TRAIN_STAGES)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params, cfg = stage_params(args.stage, args.params)
    fit(cfg, params)
