"""Checkpoints record what they were trained on (train.training_domain): the data source, the image sizes, and
whether the training images are face crops and how they frame the face -- measured, not assumed."""
import csv

import torch

from deepfake_detect.checkpoint import read_checkpoint
from deepfake_detect.config import load_params
from deepfake_detect.train import fit, training_domain

from conftest import PARAMS_YAML, make_tiny, tiny_params


def _manifest(root, paths):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split", "sha1", "width", "height"])
        w.writeheader()
        w.writerows({"path": str(p), "label": i % 2, "split": split, "sha1": f"{split}{i}", "width": 128,
                     "height": 128} for split in ("train", "val", "test") for i, p in enumerate(paths))


def test_fit_records_the_domain_in_the_checkpoint(tmp_path):
    data = make_tiny(tmp_path)  # noise pictures: no face in them
    params = tiny_params(epochs=1)
    fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "models",
        metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)
    domain = read_checkpoint(tmp_path / "models" / "tiny.pt").domain
    assert domain["data"] == "demo" and domain["image_size"] == 64 and domain["native_size"] == [64, 64]
    assert domain["n_checked"] == 16 and domain["n_with_face"] == 0 and domain["face_crops"] is False
    assert "framing" not in domain
    assert torch.load(tmp_path / "models" / "tiny.pt", weights_only=True)["domain"] == domain


def test_face_crops_and_their_framing_are_measured(tmp_path, demo_faces):
    _manifest(tmp_path / "data" / "fakes", demo_faces)
    params = load_params(PARAMS_YAML, {"data": {"fakes": {"source": "/somewhere/faces"}}})
    cfg = {**params["simplenet-fakes"], "image_size": 64}
    from deepfake_detect.data import read_manifest

    domain = training_domain(params, cfg, read_manifest(tmp_path / "data" / "fakes" / "manifest.csv"))
    assert domain["data"] == "/somewhere/faces" and domain["native_size"] == [128, 128]
    assert domain["n_checked"] == 12 and domain["n_with_face"] >= 10 and domain["face_crops"] is True
    assert 1.6 < domain["framing"]["scale"] < 2.5 and abs(domain["framing"]["ox"]) < 0.2
