"""Interrupted training: SIGKILL a training process mid-epoch, rerun, and end with exactly
the metrics of an uninterrupted run, EMA of the weights included (CPU, tiny synthetic data)."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deepfake_detect.train import state_path

from conftest import PARAMS_YAML, make_tiny, tiny_params

SCRIPT = textwrap.dedent('''
    import dataclasses, sys, time
    from pathlib import Path
    from deepfake_detect import train
    from deepfake_detect.config import load_params, rename_run

    def main(root, data, mode, params_yaml):
        params = rename_run(load_params(params_yaml, {"device": "cpu", "simplenet-fakes": {
            "image_size": 64, "batch_size": 8, "epochs": 3, "hflip": True,
            "lr_scheduler": "cosine", "ema_decay": 0.9, "select_metric": "auc"}}), "simplenet-fakes", "tiny")
        if mode == "hang":  # stand-in for a long epoch: epoch 2 starts (one real batch), then never ends
            one_epoch = train.train_one_epoch
            def slow(t, epoch):
                if epoch == 2:
                    one_epoch(dataclasses.replace(t, cfg=dataclasses.replace(t.cfg, max_steps_per_epoch=1)), epoch)
                    (root / "in-epoch-2").touch()
                    time.sleep(600)
                return one_epoch(t, epoch)
            train.train_one_epoch = slow
        train.fit(params["tiny"], params, data_dir=data, models_dir=root / "models",
                  metrics_dir=root / "metrics", cache_dir=data.parent / "cache", progress=False)

    if __name__ == "__main__":
        main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4])
''')


def _run(root: Path, data: Path, mode: str) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(root), str(data), mode, str(PARAMS_YAML)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    data = make_tiny(tmp_path)
    killed = tmp_path / "killed"
    proc = _run(killed, data, "hang")
    deadline = time.time() + 50
    while not (killed / "in-epoch-2").exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"training did not reach epoch 2:\n{proc.communicate()[0]}")
        time.sleep(0.1)
    assert state_path(killed / "models", "tiny").exists()  # epoch 1 saved before epoch 2 began
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    resumed = _run(killed, data, "normal")
    namespace = {"__name__": "uninterrupted"}  # meanwhile, the same run uninterrupted, in this process
    exec(SCRIPT, namespace)
    namespace["main"](tmp_path / "clean", data, "normal", PARAMS_YAML)
    out_r = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, out_r
    assert "resuming after epoch 1" in out_r
    a = (killed / "metrics/tiny/metrics.json").read_text()
    b = (tmp_path / "clean/metrics/tiny/metrics.json").read_text()
    assert a == b  # bit-identical numbers
    for split in ("train", "val", "test"):  # per-epoch plots: each epoch once, no gaps
        rows_r = (killed / f"metrics/tiny/plots/metrics/{split}/loss.tsv").read_text().splitlines()
        rows_c = (tmp_path / f"clean/metrics/tiny/plots/metrics/{split}/loss.tsv").read_text().splitlines()
        assert [r.split("\t")[0] for r in rows_r] == ["step", "1", "2", "3"]
        assert rows_r == rows_c
    assert not state_path(killed / "models", "tiny").exists()


def test_state_of_another_config_restarts(tmp_path, capsys):
    from deepfake_detect.io import save_torch
    from deepfake_detect.train import fit

    data = make_tiny(tmp_path, n=(8, 4, 4))
    save_torch(state_path(tmp_path / "models", "tiny"), {"config_hash": "something else"})
    params = tiny_params(epochs=1)
    out = fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "models",
              metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)
    assert "another configuration, starting over" in capsys.readouterr().out
    assert out["epochs_run"] == 1 and not state_path(tmp_path / "models", "tiny").exists()
