"""The one training loop, for every model and every training stage.

Per epoch: train, then validation (and test, when ``eval_test_every_epoch``) loss and
accuracy, logged through dvclive. The checkpoint kept is the one with the best
**validation** accuracy (ties: lower validation loss); the test accuracy reported is the
one at that epoch. Never is anything chosen on the test split.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .data import ManifestDataset, Preprocess, read_manifest
from .engine import autocast, default_num_workers, predict, resolve_device, seed_everything, to_device
from .io import write_json
from .models import get_model, num_params


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where."""


def backbone_and_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters: a model with a ``backbone`` attribute has a pretrained part."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return [], list(model.parameters())
    ids = {id(p) for p in backbone.parameters()}
    return list(backbone.parameters()), [p for p in model.parameters() if id(p) not in ids]


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    backbone, head = backbone_and_head(model)
    groups = [{"params": head, "lr": cfg["lr"]}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg["backbone_lr"] if cfg["backbone_lr"] is not None else cfg["lr"]})
    wd = cfg["weight_decay"]
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(groups, weight_decay=wd)
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, weight_decay=wd)
    return torch.optim.SGD(groups, momentum=cfg["momentum"], weight_decay=wd, nesterov=cfg["momentum"] > 0)


def make_loaders(cfg: dict, rows: list[dict], model: nn.Module, generator: torch.Generator, device: torch.device):
    size = cfg["image_size"]
    workers = default_num_workers(cfg["num_workers"])
    common = dict(batch_size=cfg["batch_size"], num_workers=workers, pin_memory=device.type == "cuda",
                  persistent_workers=workers > 0)
    loaders = {}
    for split in ("train", "val", "test"):
        split_rows = [r for r in rows if r["split"] == split]
        if not split_rows:
            raise ValueError(f"manifest has no '{split}' images for dataset '{cfg['dataset']}'")
        tf = Preprocess(size, model.mean, model.std, hflip=cfg["hflip"] and split == "train")
        ds = ManifestDataset(split_rows, tf)
        loaders[split] = DataLoader(ds, shuffle=split == "train", generator=generator if split == "train" else None,
                                    drop_last=False, **common)
    return loaders


def _set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    backbone, _ = backbone_and_head(model)
    for p in backbone:
        p.requires_grad_(not frozen)


def train_one_epoch(model, loader, optimizer, device, cfg, epoch: int, progress: bool = True) -> tuple[float, float]:
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    steps = cfg["max_steps_per_epoch"] or len(loader)
    bar = tqdm(loader, total=min(steps, len(loader)), desc=f"epoch {epoch} train", leave=False, disable=not progress)
    for step, (x, y) in enumerate(bar, 1):
        x = to_device(x, device, cfg["channels_last"])
        y = y.to(device, non_blocking=True)
        with autocast(device, cfg["amp"]):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg["label_smoothing"])
        if not torch.isfinite(loss):
            raise TrainingError(f"run '{cfg['run']}': loss is {loss.item()} at epoch {epoch}, batch {step} "
                                "(lower lr, check the data)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
        bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{correct / n:.3f}")
        if step >= steps:
            break
    return loss_sum / max(n, 1), correct / max(n, 1)


def _acc(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


def fit(cfg: dict, params: dict, data_dir: str | Path = "data", models_dir: str | Path = "models",
        metrics_dir: str | Path = "metrics/train", progress: bool = True) -> dict:
    """Train one run as configured by a training-stage section of params.yaml."""
    from dvclive import Live

    run = cfg["run"]
    generator = seed_everything(params["seed"])
    device = resolve_device(params["device"])
    rows = read_manifest(Path(data_dir) / cfg["dataset"] / "manifest.csv")
    model = get_model(cfg["model"], image_size=cfg["image_size"], **cfg["model_params"])
    n_params = num_params(model)
    model = model.to(device)
    if cfg["channels_last"] and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loaders = make_loaders(cfg, rows, model, generator, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = None
    if cfg["lr_scheduler"] == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg["plateau_factor"],
                                                               patience=cfg["plateau_patience"])
    elif cfg["lr_scheduler"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg["epochs"], 1))
    run_model = torch.compile(model) if cfg["compile"] else model

    ckpt_path = Path(models_dir) / f"{run}.pt"
    live = Live(dir=str(Path(metrics_dir) / run), dvcyaml=None, save_dvc_exp=False, report=None,
                monitor_system=False)
    best = {"val_acc": -1.0, "val_loss": math.inf, "epoch": 0}
    history: list[dict] = []
    stale = 0
    t0 = time.perf_counter()
    print(f"{run}: {cfg['model']} ({n_params:,} params) on {cfg['dataset']} "
          f"({', '.join(f'{k} {len(v.dataset)}' for k, v in loaders.items())}) on {device}")
    for epoch in range(1, cfg["epochs"] + 1):
        _set_backbone_frozen(model, epoch <= cfg["freeze_backbone_epochs"])
        tr_loss, tr_acc = train_one_epoch(run_model, loaders["train"], optimizer, device, cfg, epoch, progress)
        ev = dict(amp=cfg["amp"], channels_last=cfg["channels_last"], progress=progress)
        vp, vy, va_loss = predict(run_model, loaders["val"], device, desc=f"epoch {epoch} val", **ev)
        row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": va_loss, "val_acc": _acc(vp, vy),
               "lr": optimizer.param_groups[0]["lr"]}
        if cfg["eval_test_every_epoch"]:
            tp, ty, te_loss = predict(run_model, loaders["test"], device, desc=f"epoch {epoch} test", **ev)
            row.update(test_loss=te_loss, test_acc=_acc(tp, ty))
        history.append(row)
        live.step = epoch
        for key, value in row.items():
            if key != "epoch":
                split, _, name = key.partition("_")
                live.log_metric(f"{split}/{name}" if name else key, value, plot=True)
        improved = (row["val_acc"] > best["val_acc"]
                    or (row["val_acc"] == best["val_acc"] and row["val_loss"] < best["val_loss"]))
        if improved:
            best = {"val_acc": row["val_acc"], "val_loss": row["val_loss"], "epoch": epoch}
            save_checkpoint(ckpt_path, model, cfg["image_size"], run=run, extra={"dataset": cfg["dataset"]},
                            metrics={"best_epoch": epoch, "best_val_acc": row["val_acc"]})
            stale = 0
        else:
            stale += 1
        print(f"{run} epoch {epoch}/{cfg['epochs']}: train loss {tr_loss:.4f} acc {tr_acc:.4f} | "
              f"val loss {va_loss:.4f} acc {row['val_acc']:.4f}"
              + (f" | test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f}" if "test_acc" in row else "")
              + (" *" if improved else ""))
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(va_loss)
        elif scheduler is not None:
            scheduler.step()
        if cfg["early_stopping_patience"] and stale >= cfg["early_stopping_patience"]:
            print(f"{run}: early stop after epoch {epoch} ({stale} epochs without val-acc gain)")
            break
    train_time = time.perf_counter() - t0

    best_row = history[best["epoch"] - 1]
    if "test_acc" in best_row:
        test_acc = best_row["test_acc"]
    else:  # evaluate the best-validation checkpoint once on test
        from .checkpoint import read_checkpoint

        model.load_state_dict(read_checkpoint(ckpt_path)["state_dict"])
        tp, ty, _ = predict(model, loaders["test"], device, amp=cfg["amp"], progress=progress, desc="test")
        test_acc = _acc(tp, ty)
    summary = {"best_val_acc": best["val_acc"], "best_epoch": best["epoch"], "test_acc_at_best_val": test_acc,
               "epochs_run": len(history), "num_params": n_params, "train_time_s": round(train_time, 2)}
    summary.update({f"final_{k}": v for k, v in history[-1].items() if k not in ("epoch", "lr")})
    for key, value in summary.items():
        live.summary[key] = value
    live.end()
    # the checkpoint carries the run's summary too
    from .checkpoint import read_checkpoint

    ckpt = read_checkpoint(ckpt_path)
    ckpt["metrics"] = {**ckpt["metrics"], **summary, "history": history}
    from .io import save_torch

    save_torch(ckpt_path, ckpt)
    print(f"{run}: best val acc {best['val_acc']:.4f} at epoch {best['epoch']}, test acc there {test_acc:.4f} "
          f"({train_time:.0f} s) -> {ckpt_path}")
    return summary
