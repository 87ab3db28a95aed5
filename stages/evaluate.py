"""DVC stage evaluate-roc-det: metrics/evaluate/<run>.json and plots/evaluate/ for every run in params.yaml."""
import argparse

from deepfake_detect.config import stage_params
from deepfake_detect.evaluate import evaluate_runs

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params, cfg = stage_params("evaluate-roc-det", args.params)
    evaluate_runs(params, cfg)
