"""Figures and the plots page: ``curves`` (ROC and DET figures and their datapoint CSVs, for evaluate-roc-det),
``images`` (dataset samples, saliency, Grad-CAM and mean maps, for explain) and ``page`` (every DVC plot on
one offline HTML page: ``deepfake-detect plots``). The training curves are not drawn here: DVC draws them
from the TSV files dvclive writes during training (the ``plots`` of dvc.yaml)."""
