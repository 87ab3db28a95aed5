"""The shipped detectors: ``<task>.pt`` (a float16 checkpoint), ``<task>.json`` (its model card, format
``deepfake-detect-card``) and ``<task>.md`` (the card for people), for the tasks ``faceswap`` and ``generated``.

Made by the release stage (``dvc repro real/dvc.yaml:release``, ``deepfake_detect.release``), never by hand; the
files are git-tracked (DVC outs with ``cache: false``) and shipped as package data (pyproject.toml). docs/detectors.md
says how they are chosen and what each card field means.
"""
