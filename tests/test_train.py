"""The training loop: outputs, the decoded cache, the epoch sampler (tiny synthetic data, CPU)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_detect.config import TrainConfig
from deepfake_detect.data import (
    EpochSampler,
    ManifestDataset,
    Preprocess,
    build_decoded_cache,
    collate_uint8,
    load_rgb,
    read_manifest,
)
from deepfake_detect.train import fit, state_path

from conftest import make_tiny, tiny_params


def test_fit_writes_outputs_and_cleans_state(tmp_path):
    data = make_tiny(tmp_path)
    params = tiny_params(hflip=True, eval_test_every_epoch=False)
    out = fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "models",
              metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)
    assert out["epochs_run"] == 2 and out["train_images_per_epoch"] == 16
    ckpt = torch.load(tmp_path / "models/tiny.pt", weights_only=True)
    assert ckpt["metrics"]["best_epoch"] == out["best_epoch"] and len(ckpt["metrics"]["history"]) == 2
    metrics = json.loads((tmp_path / "metrics/tiny/metrics.json").read_text())
    assert "train_time_s" not in metrics  # no timings in metrics: equal inputs, equal files
    assert metrics["test_acc_at_best_val"] == out["test_acc_at_best_val"]
    assert not state_path(tmp_path / "models", "tiny").exists()  # removed once the run completes
    tsv = (tmp_path / "metrics/tiny/plots/metrics/val/acc.tsv").read_text().split()
    assert tsv[:2] == ["step", "acc"] and tsv[2::2] == ["1", "2"]
    assert not (tmp_path / "metrics/tiny/plots/metrics/test").exists()  # test scored once, at the best epoch


def test_decoded_cache_gives_identical_tensors(tmp_path):
    data = make_tiny(tmp_path, n=(6, 2, 2))
    rows = read_manifest(data / "fakes/manifest.csv", "train")
    prep = Preprocess(64, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    cache = build_decoded_cache(rows, 64, tmp_path / "cache", progress=False)
    assert cache.stat().st_size == len(rows) * 3 * 64 * 64
    assert build_decoded_cache(rows, 64, tmp_path / "cache", progress=False) == cache  # reused
    plain, cached = ManifestDataset(rows, prep), ManifestDataset(rows, prep, cache=cache)
    for i in range(len(rows)):
        assert torch.equal(plain[i][0], cached[i][0]) and plain[i][1] == cached[i][1]
        assert torch.equal(cached[(i, True)][0], plain[i][0].flip(-1))
    raw = ManifestDataset(rows, prep, cache=cache, raw=True)  # the trainer's: uint8 batches, normalised on device
    x, y = collate_uint8([raw[i] for i in range(len(rows))] + [raw[(0, True)]])
    assert x.dtype == torch.uint8 and x.shape == (len(rows) + 1, 3, 64, 64)
    assert x.is_contiguous(memory_format=torch.channels_last)  # pixel-major records: no transposing copy
    assert prep.normalise(x).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(prep.normalise(x), torch.stack([plain[i][0] for i in range(len(rows))] + [plain[0][0].flip(-1)]))
    assert y.tolist() == [r["label"] for r in rows] + [rows[0]["label"]]
    ref = (torch.from_numpy(np.array(load_rgb(rows[0]["path"]).resize((64, 64), Image.BILINEAR))).permute(2, 0, 1)
           .float() / 255 - prep.mean) / prep.std
    assert torch.allclose(plain[0][0], ref, atol=1e-5)
    half = Preprocess(64, (0.5,) * 3, (0.5,) * 3)  # equal channels: the scalar fast path, same numbers
    torch.testing.assert_close(half.normalise(x), (x.float() / 255 - 0.5) / 0.5, atol=1e-6, rtol=0)
    from deepfake_detect.engine import InputBuffer, to_device

    buffer, cpu = InputBuffer(), torch.device("cpu")  # the trainer's reused input batch: same numbers, same memory
    first = to_device(x, cpu, True, prep.normalise, buffer)
    assert torch.equal(first, prep.normalise(x)) and first.is_contiguous(memory_format=torch.channels_last)
    second = to_device(x.flip(0), cpu, True, prep.normalise, buffer)
    assert second.data_ptr() == first.data_ptr() and torch.equal(second, prep.normalise(x.flip(0)))


def test_cached_and_uncached_training_agree(tmp_path):
    data = make_tiny(tmp_path)
    results = []
    for cached in (True, False):
        params = tiny_params(hflip=True, decode_cache=cached, run=f"c{cached}")
        results.append(fit(params[f"c{cached}"], params, data_dir=data, models_dir=tmp_path / "models",
                           metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False))
    for key in ("final_train_loss", "final_val_loss", "final_test_loss", "best_val_acc"):
        assert results[0][key] == results[1][key], key


def test_epoch_sampler_shards_match_single_process():
    single = list(EpochSampler(10, shuffle=True, seed=3, hflip=True))
    assert sorted(i for i, _ in single) == list(range(10))
    shards = [list(EpochSampler(10, shuffle=True, seed=3, hflip=True, num_replicas=2, rank=r)) for r in (0, 1)]
    # per-rank batch b: the union of the ranks' k-th batches is the single-process k-th batch of 2b
    b = 2
    for k in range(0, 5, b):
        assert sorted(shards[0][k:k + b] + shards[1][k:k + b]) == sorted(single[2 * k:2 * k + 2 * b])
    s = EpochSampler(10, shuffle=True, seed=3)
    s.set_epoch(1)
    assert list(s) != [i for i, _ in single]  # a new order each epoch
    ev = [list(EpochSampler(7, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(ev, [])) == list(range(7))  # evaluation: every item exactly once overall


def test_batch_size_must_divide_over_processes(tmp_path, monkeypatch):
    data = make_tiny(tmp_path, n=(4, 2, 2))
    params = tiny_params(batch_size=3)
    monkeypatch.setenv("WORLD_SIZE", "2")
    from deepfake_detect import train

    monkeypatch.setattr(train, "init_distributed", lambda device: (0, 2, torch.device("cpu")))
    with pytest.raises(ValueError, match="batch_size 3 is not divisible"):
        fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "m",
            metrics_dir=tmp_path / "x", cache_dir=tmp_path / "cache", progress=False)


def test_non_finite_loss_stops_with_epoch_and_batch(tmp_path):
    from deepfake_detect.train import TrainingError

    data = make_tiny(tmp_path)
    params = tiny_params(optimizer="sgd", momentum=0.0, epochs=3)
    cfg = TrainConfig.from_params(params, "tiny")
    object.__setattr__(cfg, "lr", 1e30)  # past the params range (TrainConfig refuses it): the loop's guard is tested
    with pytest.raises(TrainingError, match=r"run 'tiny': loss is not finite at epoch 1, batch [2-9]"):
        fit(cfg, params, data_dir=data, models_dir=tmp_path / "models",
            metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_frozen_layers_and_warmup_keep_weights_and_batchnorm_stats(tmp_path):
    """frozen_layers never change (weights and BN running stats); a warm-up epoch freezes only the backbone."""
    from deepfake_detect.engine import grad_scaler
    from deepfake_detect.models import get_model
    from deepfake_detect.train import (
        Trainer,
        freeze_batchnorm_stats,
        make_loaders,
        make_optimizer,
        set_trainable,
        train_one_epoch,
    )

    data = make_tiny(tmp_path)
    params = tiny_params(model="competition", model_params={}, frozen_layers=["features.stem", "features.stage0"])
    cfg = params["tiny"]
    out = fit(cfg, params, data_dir=data, models_dir=tmp_path / "models", metrics_dir=tmp_path / "metrics",
              cache_dir=tmp_path / "cache", progress=False)
    torch.manual_seed(params["seed"])  # fit built its model right after seeding: rebuild the same init
    init = _state(get_model("competition", image_size=64))
    trained = torch.load(tmp_path / "models/tiny.pt", weights_only=True)["state_dict"]
    frozen = [k for k in init if k.startswith(("features.stem.", "features.stage0."))]
    assert frozen and any(k.endswith("running_mean") for k in frozen)
    for k in frozen:
        torch.testing.assert_close(trained[k], init[k], msg=k)
    assert not torch.equal(trained["classifier.1.weight"], init["classifier.1.weight"])
    assert not torch.equal(trained["features.stage1.0.dw.1.running_mean"], init["features.stage1.0.dw.1.running_mean"])
    assert out["epochs_run"] == 2

    # warm-up: a timm backbone stays as it was (BN stats too) while the head learns
    model = get_model("efficientnet_lite0", image_size=64, weights="none")
    cfg = dict(cfg, model="efficientnet_lite0", frozen_layers=[], freeze_backbone_epochs=1, max_steps_per_epoch=1)
    before = _state(model)
    loaders = make_loaders(cfg, read_manifest(data / "fakes/manifest.csv"), model, 0, torch.device("cpu"),
                           tmp_path / "cache", progress=False)
    opt = make_optimizer(model, cfg)
    set_trainable(model, cfg, epoch=1)
    train_one_epoch(Trainer(cfg, model, loaders, opt, grad_scaler(torch.device("cpu")), torch.device("cpu"),
                            progress=False), 1)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["head.8.weight"], after["head.8.weight"])
    set_trainable(model, cfg, epoch=2)
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    freeze_batchnorm_stats(model)
    assert model.backbone.bn1.training


def test_frozen_layers_must_name_parameters(tmp_path):
    from deepfake_detect.config import ParamsError

    data = make_tiny(tmp_path)
    params = tiny_params(frozen_layers=["backbone.blocks.0"])
    with pytest.raises(ParamsError, match="frozen_layers of run 'tiny' names 'backbone.blocks.0'.*simplenet"):
        fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "models",
            metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)


def test_fp16_autocast_gets_loss_scaling(tmp_path, monkeypatch):
    """fp16 (CUDA GPUs without bf16: T4, V100) trains through a GradScaler; bf16, fp32 and CPU do not need one.
    The scaler's wiring is tested on CPU with a CPU scaler standing in for the CUDA one."""
    from deepfake_detect import engine
    from deepfake_detect.models import get_model
    from deepfake_detect.train import Trainer, make_loaders, make_optimizer, train_one_epoch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert engine.amp_dtype(torch.device("cuda")) == torch.float16
    assert engine.amp_dtype(torch.device("cuda"), enabled=False) is None
    assert not engine.grad_scaler(torch.device("cpu")).is_enabled()  # CPU: full precision, no scaling

    data = make_tiny(tmp_path)
    cfg = tiny_params(max_steps_per_epoch=1, optimizer="sgd", lr=0.1)["tiny"]
    cpu = torch.device("cpu")

    def one_step(scaler):
        torch.manual_seed(0)
        model = get_model("simplenet", image_size=64)
        loaders = make_loaders(cfg, read_manifest(data / "fakes/manifest.csv"), model, 0, cpu, tmp_path / "cache",
                               progress=False)
        before = _state(model)
        train_one_epoch(Trainer(cfg, model, loaders, make_optimizer(model, cfg), scaler, cpu, progress=False), 1)
        return before, _state(model)

    monkeypatch.setattr(engine, "amp_dtype", lambda device, enabled=True: torch.float16)
    scaled = engine.grad_scaler(cpu)
    assert scaled.is_enabled() and scaled.get_scale() == 65536.0
    _, plain = one_step(torch.amp.GradScaler("cpu", enabled=False))
    _, with_scaler = one_step(scaled)
    for k in plain:  # scaling by 2**16 and back is exact: the same update
        torch.testing.assert_close(with_scaler[k], plain[k], msg=k)
    # gradients that overflow in fp16 skip the step and lower the scale, instead of writing inf into the weights
    overflow = torch.amp.GradScaler("cpu", init_scale=3e38)
    before, after = one_step(overflow)
    assert all(torch.equal(before[k], after[k]) for k in before) and overflow.get_scale() < 3e38


def _row(epoch, acc, auc, loss):
    return {"epoch": epoch, "val_acc": acc, "val_auc": auc, "val_loss": loss}


@pytest.mark.parametrize("metric, best", [("acc", 1), ("auc", 2), ("loss", 3)])
def test_select_metric_picks_the_checkpoint_epoch(metric, best):
    from deepfake_detect.models import get_model
    from deepfake_detect.train import Progress

    params = tiny_params(select_metric=metric, threshold_rule="fixed", early_stopping_patience=2)
    cfg = params["tiny"]
    model = get_model("competition", image_size=32)
    done = Progress()
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8])
    rows = [_row(1, 0.9, 0.80, 0.50), _row(2, 0.8, 0.95, 0.45), _row(3, 0.7, 0.90, 0.30), _row(4, 0.6, 0.5, 0.9)]
    for r in rows:
        done.record(r, model, cfg, s, y)
    assert done.best["epoch"] == best and done.best_ckpt.metrics["best_epoch"] == best
    assert done.best_ckpt.metrics["select_metric"] == metric
    assert done.stale == 4 - best and done.stopped == (4 - best >= 2)  # early stopping follows the same metric


def test_checkpoint_holds_what_validation_scored_and_its_threshold(tmp_path):
    """The saved weights (here an EMA) reproduce the best epoch's validation accuracy and AUC when the
    checkpoint is reloaded and scored like evaluate does; the threshold is the rule applied to those scores."""
    from deepfake_detect import metrics
    from deepfake_detect.checkpoint import load_model
    from deepfake_detect.detector import Detector

    data = make_tiny(tmp_path)
    params = tiny_params(ema_decay=0.9, select_metric="auc", threshold_rule="balanced", tta="flip", epochs=3)
    out = fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "models",
              metrics_dir=tmp_path / "metrics", cache_dir=tmp_path / "cache", progress=False)
    model, ckpt = load_model(tmp_path / "models/tiny.pt")
    assert ckpt.tta == "flip" and ckpt.metrics["ema_decay"] == 0.9
    val = [r for r in read_manifest(data / "fakes/manifest.csv") if r["split"] == "val"]
    y = np.array([int(r["label"]) for r in val])
    p, errors = Detector.from_model(model, ckpt).score_paths([r["path"] for r in val], list(y), progress=False)
    assert not errors
    assert metrics.auc(y, p) == pytest.approx(out["best_val_auc"], abs=1e-6)
    assert ((p > 0.5) == y).mean() == pytest.approx(out["best_val_acc"])
    assert ckpt.threshold == pytest.approx(metrics.choose_threshold(y, p, "balanced"), abs=1e-4)
    assert out["threshold"] == ckpt.threshold
    # balanced accuracy at the stored threshold is the best over every cut of the validation scores
    best = max((p[y == 1] >= c).mean() / 2 + (p[y == 0] < c).mean() / 2 for c in np.unique(p))
    pred = p > ckpt.threshold
    assert pred[y == 1].mean() / 2 + (~pred[y == 0]).mean() / 2 == pytest.approx(best)


def test_ema_weights_differ_from_the_raw_weights(tmp_path):
    data = make_tiny(tmp_path)
    runs = {}
    for decay in (0.0, 0.9):
        params = tiny_params(ema_decay=decay, select_metric="loss", eval_test_every_epoch=False)
        root = tmp_path / f"ema{decay}"
        runs[decay] = fit(params["tiny"], params, data_dir=data, models_dir=root / "models",
                          metrics_dir=root / "metrics", cache_dir=tmp_path / "cache", progress=False)
        runs[decay]["state"] = torch.load(root / "models/tiny.pt", weights_only=True)["state_dict"]
    a, b = runs[0.0]["state"], runs[0.9]["state"]
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
