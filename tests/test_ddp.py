"""Training across processes: torchrun with 2 CPU processes (gloo) on tiny data matches
single-process semantics."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from deepfake_detect.checkpoint import load_model
from deepfake_detect.data import ManifestDataset, Preprocess, read_manifest
from deepfake_detect.engine import predict
from deepfake_detect.train import fit

from conftest import PARAMS_YAML, make_tiny, tiny_params

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    from deepfake_detect.config import load_params, rename_run
    from deepfake_detect.train import fit

    root, data = Path(sys.argv[1]), Path(sys.argv[2])
    params = rename_run(load_params(sys.argv[3], {"device": "cpu", "simplenet-fakes": {
        "image_size": 64, "batch_size": 8, "epochs": 2, "hflip": True, "eval_test_every_epoch": False}}),
        "simplenet-fakes", "tiny")
    fit(params["tiny"], params, data_dir=data, models_dir=root / "models",
        metrics_dir=root / "metrics", cache_dir=data.parent / "cache", progress=False)
''')


def test_two_process_ddp_matches_single_process(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available")
    data = make_tiny(tmp_path, n=(16, 9, 7))  # odd eval splits: shards of unequal size
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "ddp"), str(data), str(PARAMS_YAML)],
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout
    ckpt_path = tmp_path / "ddp/models/tiny.pt"
    model, ckpt = load_model(ckpt_path)
    m = ckpt.metrics
    assert m["train_images_per_epoch"] == 16  # every training image once per epoch, over both processes

    # validation/test metrics are over the full split exactly once: a single-process evaluation
    # of the same weights gives the same accuracy
    rows = read_manifest(data / "fakes/manifest.csv")
    prep = Preprocess(64, model.mean, model.std)
    for split, key in (("val", "best_val_acc"), ("test", "test_acc_at_best_val")):
        ds = ManifestDataset([r for r in rows if r["split"] == split], prep)
        probs, labels, loss = predict(model, torch.utils.data.DataLoader(ds, batch_size=8), torch.device("cpu"),
                                      progress=False)
        assert len(labels) == len(ds)
        # other batches than the two processes' shards: float32 results differ in the last bits, so an image whose
        # two probabilities tie to 1e-5 may go either way
        near_ties = int((np.abs(probs[:, 1] - probs[:, 0]) < 1e-5).sum())
        assert abs(float((probs.argmax(1) == labels).mean()) - m[key]) <= near_ties / len(labels), split
    best = m["history"][m["best_epoch"] - 1]
    assert set(m["history"][0]) >= {"train_loss", "val_loss", "val_acc"} and "test_acc" not in best

    # and training itself: per-process batch 4 x 2 processes = the single-process batches of 8
    params = tiny_params(hflip=True, eval_test_every_epoch=False)
    single = fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "single/models",
                 metrics_dir=tmp_path / "single/metrics", cache_dir=tmp_path / "cache", progress=False)
    single_history = torch.load(tmp_path / "single/models/tiny.pt", weights_only=True)["metrics"]["history"]
    for a, b in zip(m["history"], single_history):
        assert a["train_images"] == b["train_images"] == 16
        np.testing.assert_allclose([a["train_loss"], a["val_loss"]], [b["train_loss"], b["val_loss"]], rtol=2e-3)
    assert single["train_images_per_epoch"] == 16
