"""Same seed and params on CPU give bit-identical metrics (two runs, compare the JSON)."""
import json

from deepfake_detect.train import fit

from conftest import make_tiny, tiny_params


def test_two_runs_give_identical_metrics_json(tmp_path):
    data = make_tiny(tmp_path)
    params = tiny_params(hflip=True, epochs=2, lr_scheduler="plateau", label_smoothing=0.1)
    texts = []
    for run_dir in ("a", "b"):
        fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / run_dir / "models",
            metrics_dir=tmp_path / run_dir / "metrics", cache_dir=tmp_path / run_dir / "cache", progress=False)
        texts.append((tmp_path / run_dir / "metrics/tiny/metrics.json").read_text())
    assert texts[0] == texts[1]
    m = json.loads(texts[0])
    assert m["epochs_run"] == 2 and 0 <= m["best_val_acc"] <= 1


def test_another_seed_gives_other_numbers(tmp_path):
    data = make_tiny(tmp_path)
    losses = []
    for seed in (0, 1):
        params = tiny_params(epochs=1)
        params["seed"] = seed
        losses.append(fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / f"m{seed}",
                          metrics_dir=tmp_path / f"x{seed}", cache_dir=tmp_path / "cache",
                          progress=False)["final_train_loss"])
    assert losses[0] != losses[1]
