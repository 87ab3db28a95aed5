"""DVC stage prepare-splits: data/<dataset>/manifest.csv and metrics/data/<dataset>.json."""
import sys

from deepfake_detect.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare-splits", *sys.argv[1:]]))
