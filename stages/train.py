"""DVC training stages (train-simplenet-fakes, train-simplenet-synth, finetune-xception,
train-competition): one script; the stage name picks the params.yaml section.

    python stages/train.py train-simplenet-fakes [--params params.yaml]
"""
import sys

from deepfake_detect.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
