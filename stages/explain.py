"""DVC stage explain: saliency, Grad-CAM and faithfulness per run -> plots/explain/, metrics/explain/.

    python stages/explain.py [--params params.yaml] [--runs RUN ...]
"""
import sys

from deepfake_detect.cli import main

if __name__ == "__main__":
    sys.exit(main(["explain", *sys.argv[1:]]))
