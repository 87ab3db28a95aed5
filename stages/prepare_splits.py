"""DVC stage prepare-splits: data/<dataset>/manifest.csv and metrics/data/<dataset>.json."""
import argparse

from deepfake_detect.config import load_params
from deepfake_detect.splits import prepare_all

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    prepare_all(load_params(args.params))
