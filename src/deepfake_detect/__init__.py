"""deepfake-detect: ``from deepfake_detect import Detector`` (``detector.Detector``: load a checkpoint or a shipped
detector and score pictures with it)."""
import importlib

__version__ = "0.1.0"
__all__ = ["Detector"]


def __getattr__(name: str):
    # Imported on first use, not with the package: every DVC stage imports the package, and prepare-splits must not
    # load (nor depend on) the scoring code and torch models (tests/test_deps.py reads the static imports).
    if name == "Detector":
        return importlib.import_module(".detector", __name__).Detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
