"""The one training loop, for every model and every training stage.

Per epoch: train, then validation (and test, when ``eval_test_every_epoch``) loss, accuracy
and AUC, logged through dvclive. The checkpoint kept is the one with the best **validation**
``select_metric`` (acc, auc or loss; ties broken by the others); the test figures reported
are the ones at that epoch. The checkpoint also carries the operating threshold chosen on the
validation scores of that epoch (``threshold_rule``) and the test-time augmentation its
scores were made with (``tta``). With ``ema_decay`` > 0 an exponential moving average of the
weights (timm's ``ModelEmaV3``, with warm-up) is what is validated and checkpointed. Never is
anything chosen on the test split.

Speed: images are decoded once per dataset and size into an on-disk uint8 cache
(``data.build_decoded_cache``); batches travel as uint8 and are normalised on the device;
channels_last, fused Adam, bf16 autocast on CUDA; no host sync per step on CUDA. Scale:
``torchrun --nproc_per_node=N stages/train.py <stage>`` trains with DDP. Interruptions:
a last-epoch state beside the checkpoint lets a rerun resume to identical numbers.
Randomness of the data (order, flips) is a function of (seed, epoch) alone
(``data.EpochSampler``): the same global batches whatever the loader workers, the number of
processes or a resume.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import metrics
from .checkpoint import Checkpoint, make_checkpoint, model_state
from .config import ParamsError, TrainConfig, source_of
from .data import (
    DatasetError,
    EpochSampler,
    ManifestDataset,
    Preprocess,
    build_decoded_cache,
    cache_key,
    collate_uint8,
    load_rgb,
    read_manifest,
)
from .degrade import RandomDegrade
from .detector import Detector
from .engine import (
    InputBuffer,
    all_reduce_sum,
    amp_dtype,
    autocast,
    barrier,
    default_num_workers,
    dist_info,
    gather_predictions,
    grad_scaler,
    init_distributed,
    resolve_device,
    seed_everything,
    to_device,
)
from .errors import UserError, one_line
from .io import check_writable, save_torch
from .models import get_model, is_model, list_models, model_kwargs, num_params
from .pseudofakes import pseudo_fake_split, real_rows, uses_pseudo_fakes


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where."""


def backbone_and_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters: a model with a ``backbone`` attribute has a pretrained part."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return [], list(model.parameters())
    ids = {id(p) for p in backbone.parameters()}
    return list(backbone.parameters()), [p for p in model.parameters() if id(p) not in ids]


def make_optimizer(model: nn.Module, cfg: TrainConfig | dict) -> torch.optim.Optimizer:
    cfg = TrainConfig.of(cfg)
    backbone, head = backbone_and_head(model)
    groups = [{"params": head, "lr": cfg.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr})
    wd = cfg.weight_decay
    # the fused (single-kernel) Adam: on CPU 3x faster than the per-tensor loop, same update rule
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=wd, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=wd, fused=fused)
    return torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=wd, nesterov=cfg.momentum > 0)


def make_loaders(cfg: TrainConfig | dict, rows: list[dict], model: nn.Module, seed: int, device: torch.device,
                 cache_dir: str | Path | None = None, progress: bool = True) -> dict[str, DataLoader]:
    """Train/val/test loaders. Train: shuffled, flipped and degraded (``degrade_*`` keys) as a function of
    (seed, epoch) (``EpochSampler``; call ``set_epoch``), batch ``batch_size / world`` per process.
    Eval: each process takes every world-th image, so the split is seen exactly once.
    Batches are uint8; ``loader.dataset.transform.normalise`` runs on the device."""
    cfg = TrainConfig.of(cfg)
    rank, world = dist_info()
    if cfg.batch_size % world:
        raise ParamsError(f"{source_of(cfg)}: '{cfg.run}' batch_size {cfg.batch_size} is not divisible by the "
                          f"{world} training processes")
    size = cfg.image_size
    workers = default_num_workers(cfg.num_workers, device, cached=cfg.decode_cache)
    common = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                  prefetch_factor=4 if workers > 0 else None)
    loaders = {}
    for split in ("train", "val", "test"):
        split_rows = [r for r in rows if r["split"] == split]
        pseudo = uses_pseudo_fakes(cfg, split)
        if pseudo:  # the fakes of this split are made from its reals
            split_rows = real_rows(split_rows)
        if not split_rows:
            raise DatasetError(f"manifest has no '{split}' {'real ' if pseudo else ''}images for dataset "
                               f"'{cfg.dataset}'")
        cache = None
        if cfg.decode_cache:
            if rank != 0:  # rank 0 decodes, the others wait and read
                barrier()
            cache = build_decoded_cache(split_rows, size, cache_dir, progress=progress and rank == 0)
            if rank == 0:
                barrier()
        train = split == "train"
        augment = RandomDegrade.from_cfg(cfg, seed) if train else None  # blur / JPEG of the uint8 image
        ds = ManifestDataset(split_rows, Preprocess(size, model.mean, model.std), cache=cache, raw=True,
                             augment=augment)
        sampler = EpochSampler(len(ds), shuffle=train, seed=seed, hflip=train and cfg.hflip,
                               num_replicas=world, rank=rank, tag_epoch=augment is not None)
        if pseudo:
            ds, sampler = pseudo_fake_split(ds, sampler, cfg, seed, split)
        loaders[split] = DataLoader(ds, sampler=sampler, batch_size=cfg.batch_size // world if train else
                                    cfg.batch_size, drop_last=False, collate_fn=collate_uint8, **common)
    return loaders


@dataclass
class Trainer:
    """One run's moving parts, built once by ``fit`` and handed to each epoch: the config, the module trained
    (``model``) and the one its forward pass goes through (``run_model``: compiled, or in DDP), the loaders,
    optimizer and loss scaler, the EMA (or None), and ``scorer``: the module kept and validated (the EMA's when
    there is one) as a ``detector.Detector``, the object every other scoring path uses."""

    cfg: TrainConfig  # a run's merged section is made one (``TrainConfig.of``)
    model: nn.Module
    loaders: dict[str, DataLoader]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    run_model: nn.Module | None = None  # None: ``model``
    ema: object | None = None  # timm.utils.ModelEmaV3
    progress: bool = True
    scorer: Detector | None = None  # set by ``with_scorer``

    def __post_init__(self):
        self.cfg = TrainConfig.of(self.cfg)

    @property
    def kept(self) -> nn.Module:
        """The module validated and checkpointed: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def with_scorer(self, eval_model: nn.Module | None = None) -> "Trainer":
        """``scorer``: ``eval_model`` (default: ``kept``; compiled when the run compiles) wrapped as a Detector
        with the run's preprocessing, TTA and precision (bf16 under AMP on CUDA, else fp32: as training ran)."""
        base = _unwrap(self.kept)
        stub = make_checkpoint(base, self.cfg.image_size, run=self.cfg.run, tta=self.cfg.tta)
        precision = "bf16" if self.cfg.amp and amp_dtype(self.device) == torch.bfloat16 else "fp32"
        self.scorer = Detector.from_model(eval_model or self.kept, stub, precision=precision,
                                          channels_last=self.cfg.channels_last)
        return self


def evaluate(t: Trainer, split: str, desc: str) -> tuple[np.ndarray, np.ndarray, float]:
    """The softmax (N, 2), labels and mean loss of the kept module on a whole split, through ``t.scorer``
    (``Detector.score_batches``: the run's TTA and precision); under DDP each process scores its shard and the
    predictions are gathered, so every process gets the full split in order."""
    loader = t.loaders[split]
    probs, labels, loss = t.scorer.score_batches(loader, desc, t.progress, loader.dataset.transform.normalise)
    return gather_predictions(probs, labels, loss)


def check_model(cfg: TrainConfig | dict, where: str | None = None) -> None:
    """The run's model exists and takes its ``model_params`` (else the key is named)."""
    cfg = TrainConfig.of(cfg)
    name, where = cfg.model, where or source_of(cfg)
    if not is_model(name):
        raise ParamsError(f"{where}: model '{name}' of run '{cfg.run}' is not a known model "
                          f"(registered: {', '.join(list_models())}; or any timm architecture)")
    valid = model_kwargs(name)
    for key in cfg.model_params:
        if valid is not None and key not in valid:
            raise ParamsError(f"{where}: unknown key 'model_params.{key}' of run '{cfg.run}' for model '{name}' "
                              f"(valid keys here: {', '.join(sorted(valid)) or 'none'})")


def check_frozen_layers(model: nn.Module, cfg: TrainConfig) -> None:
    """Every ``frozen_layers`` prefix names a module that holds parameters (else the key is named)."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in cfg.frozen_layers:
        if not isinstance(prefix, str) or not any(n == prefix or n.startswith(prefix + ".") for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ParamsError(f"{source_of(cfg)}: frozen_layers of run '{cfg.run}' names {prefix!r}, which holds no "
                              f"parameters of model '{cfg.model}' (module names start with: {', '.join(tops)})")


def set_trainable(model: nn.Module, cfg: TrainConfig | dict, epoch: int) -> None:
    """requires_grad per parameter for this epoch: the backbone is frozen during the first
    ``freeze_backbone_epochs`` epochs, the ``frozen_layers`` always, and so are the prefixes a model
    names in its ``frozen_prefixes`` attribute (e.g. the frozen-feature probe's backbone)."""
    cfg = TrainConfig.of(cfg)
    backbone = {id(p) for p in backbone_and_head(model)[0]}
    warmup = epoch <= cfg.freeze_backbone_epochs
    prefixes = list(cfg.frozen_layers) + list(getattr(model, "frozen_prefixes", ()))
    for name, p in model.named_parameters():
        frozen = any(name == f or name.startswith(f + ".") for f in prefixes)
        p.requires_grad_(not (frozen or (warmup and id(p) in backbone)))


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """Put every BatchNorm whose parameters are all frozen in eval mode (call after ``model.train()``):
    a frozen layer keeps its pretrained running statistics instead of drifting towards the batches."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                m.eval()


def train_one_epoch(t: Trainer, epoch: int) -> tuple[float, float, int]:
    """One pass over the training loader; returns (mean loss, accuracy, images seen), summed over processes.
    ``t.scaler``: ``engine.grad_scaler`` (loss scaling under fp16 autocast; a pass-through otherwise).
    ``t.ema``: a ``timm.utils.ModelEmaV3`` updated after every step (its warm-up counts global steps)."""
    model, loader, optimizer, scaler, device, cfg, ema = (t.run_model or t.model), t.loaders["train"], t.optimizer, \
        t.scaler, t.device, t.cfg, t.ema
    model.train()
    freeze_batchnorm_stats(model)
    # running sums stay on the device; the host syncs every ``check_every`` steps (progress, NaN check)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.zeros((), dtype=torch.int64, device=device)  # first batch with a non-finite loss
    n, check_every = 0, 1 if device.type == "cpu" else 25
    steps = min(cfg.max_steps_per_epoch or len(loader), len(loader))
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch} train", leave=False, disable=not t.progress)
    normalise = loader.dataset.transform.normalise
    buffer = InputBuffer() if device.type == "cpu" else None  # CUDA: the caching allocator already reuses
    for step, (x, y) in enumerate(bar, 1):
        x = to_device(x, device, cfg.channels_last, normalise, buffer)
        y = y.to(device, non_blocking=True)
        with autocast(device, cfg.amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), step, first_bad)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skips the step when fp16 gradients overflowed, then lowers the scale
        scaler.update()
        if ema is not None:
            ema.update(_unwrap(model), step=(epoch - 1) * len(loader) + step)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
        if step % check_every == 0 or step == steps:
            if first_bad.item():
                raise TrainingError(f"run '{cfg.run}': loss is not finite at epoch {epoch}, batch "
                                    f"{first_bad.item()} (lower lr, check the data)")
            bar.set_postfix(loss=f"{loss_sum.item() / n:.4f}", acc=f"{correct.item() / n:.3f}")
        if step >= steps:
            break
    loss_sum, correct = loss_sum.item(), correct.item()
    loss_sum, correct, n = all_reduce_sum([loss_sum, correct, n], device)
    return loss_sum / max(n, 1), correct / max(n, 1), int(n)


def _acc(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


def _auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of p(fake); NaN when the split holds one class only (tiny smoke-test splits)."""
    try:
        return metrics.auc(labels, probs[:, 1])
    except ValueError:
        return float("nan")


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def make_ema(model: nn.Module, cfg: TrainConfig):
    """timm's ModelEmaV3 of the model (None when ``ema_decay`` is 0). Warm-up: the decay grows as
    1 - (1 + step)^-3/4 up to ``ema_decay``, so short small-data runs average recent weights, not the init."""
    if not cfg.ema_decay:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=3 / 4)
    ema.requires_grad_(False)
    return ema


# ---------------------------------------------------------------- resumable state

def state_path(models_dir: str | Path, run: str) -> Path:
    """Last-epoch training state: beside the checkpoint, hidden, removed when the run completes.

    Not a DVC out, on purpose: DVC deletes a stage's outs (a directory out with everything in it)
    before it reruns the command, so a state inside one would never reach the rerun it exists for.
    The flip side: when DVC restores the stage from its run cache instead, none of our code runs
    and a killed run's state stays until the run trains again (``load_state`` then removes it unless
    it belongs to exactly that configuration, data and code)."""
    return Path(models_dir) / f".{run}.state.pt"


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """Hash of every .py file of the package (names and bytes) and torch's version: a state saved
    by other code (a resized layer, a changed update rule) is never resumed."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha1(f"torch {torch.__version__}\n".encode())
    for p in sorted(root.rglob("*.py")):
        h.update(f"{p.relative_to(root).as_posix()}\n".encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def resume_key(cfg: TrainConfig, params: dict, rows: list[dict], world: int) -> dict[str, str]:
    """What a run's numbers depend on, part by part, so a mismatch can say which part changed:
    its params (section, seed, device kind, process count), its data, and the code."""
    parts = {"params": {"cfg": cfg.to_dict(), "seed": params["seed"], "device": resolve_device(params["device"]).type,
                        "world": world},
             "data": cache_key(rows, 0), "code": code_hash()}
    return {k: hashlib.sha1(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest() for k, v in parts.items()}


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
            "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()]}


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if st["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    name, keys, *rest = st["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(internal), gauss))


def save_state(path: Path, key: dict[str, str], model: nn.Module, optimizer, scheduler, scaler,
               done: "Progress", ema=None) -> None:
    """Everything a rerun needs to go on after the last finished epoch as if never stopped."""
    save_torch(path, {"key": key, "epoch": len(done.history), "model": model_state(model),
                      "ema": model_state(ema.module) if ema is not None else None,
                      "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict() if scheduler is not None else None,
                      "scaler": scaler.state_dict(), "rng": _rng_state(), **vars(done),
                      "best_ckpt": done.best_ckpt.to_dict() if done.best_ckpt is not None else None})


def load_state(path: Path, key: dict[str, str], model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler, scaler, ema=None) -> "Progress | None":
    """Resume from the saved state when it belongs to this very configuration, data and code: model,
    optimizer, scheduler, loss scaler and random generators restored, the run's progress returned. Else
    None, one line saying why, the stale file removed, and everything as it was (a clean start)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state.get("key") or {}
    except Exception as e:  # a state cut short (or not ours) is not worth failing for: restart
        why = f"unreadable training state ({type(e).__name__}), starting over"
    else:
        changed = [part for part in key if saved.get(part) != key[part]]
        why = (f"training state of another configuration, starting over (changed: {', '.join(changed)})" if changed
               else _restore(state, model, optimizer, scheduler, scaler, ema))
    if why is None:
        _set_rng_state(state["rng"])
        done = Progress(**{f.name: state[f.name] for f in fields(Progress)})
        if done.best_ckpt is not None:
            done.best_ckpt = Checkpoint(**done.best_ckpt)  # as save_state wrote it
        return done
    print(f"{path}: {why}")
    path.unlink(missing_ok=True)
    return None


def _restore(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler,
             ema=None) -> str | None:
    """Load a state into model, optimizer, scheduler, scaler (and EMA): None, or why it does not fit (then all
    are put back as they were, so the run starts exactly as a fresh one)."""
    parts = [(model, "model"), (optimizer, "optimizer")] + ([(scheduler, "scheduler")] if scheduler else [])
    parts += [(scaler, "scaler")] if scaler.is_enabled() else []
    parts += [(ema.module, "ema")] if ema is not None else []
    before = [copy.deepcopy(obj.state_dict()) for obj, _ in parts]
    try:
        for obj, name in parts:
            obj.load_state_dict(state[name])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        for (obj, _), sd in zip(parts, before):
            obj.load_state_dict(sd)
        return f"training state does not fit the model, starting over ({one_line(e, 200)})"
    return None


# ---------------------------------------------------------------- fit

def training_domain(params: dict, cfg: TrainConfig | dict, rows: list[dict]) -> dict:
    """What a run trains on, recorded in its checkpoint so that predict and evaluate can judge their inputs:
    ``data`` (``demo`` or the folder params name), ``image_size``, the training images' own median size
    (``native_size``), and from ``faces.measure_framing`` on a sample of them whether they are face crops and
    how they frame the face (predict crops faces in larger pictures the same way)."""
    from .faces import FRAMING_SAMPLE, FaceDetectorError, measure_framing

    cfg = TrainConfig.of(cfg)
    train = [r for r in rows if r["split"] == "train"]
    sample = train[::max(1, len(train) // FRAMING_SAMPLE)][:FRAMING_SAMPLE]
    sizes = [(int(r["width"]), int(r["height"])) for r in train if r.get("width") and r.get("height")]
    domain = {"data": str(params["data"][cfg.dataset]["source"]), "image_size": int(cfg.image_size),
              "native_size": [int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))]
              if sizes else None}
    try:
        domain.update(measure_framing(load_rgb(r["path"]) for r in sample))
    except FaceDetectorError as e:  # training does not need the detector; predict then frames faces by default
        print(f"{cfg.run}: face crops not measured: {e}")
        domain["face_crops"] = None
    return domain


@dataclass
class Progress:
    """What the epoch loop carries from one epoch to the next (and what a resumed run gets back)."""

    history: list[dict] = field(default_factory=list)  # one row per epoch: losses, accuracies, AUCs, lr, images
    best: dict = field(default_factory=lambda: {"val_acc": -1.0, "val_loss": math.inf, "val_auc": -1.0, "epoch": 0})
    best_ckpt: Checkpoint | None = None  # the checkpoint of the best validation epoch
    stale: int = 0  # epochs since the last validation gain
    stopped: bool = False  # early stopping has ended the run
    elapsed: float = 0.0  # training seconds so far
    domain: dict = field(default_factory=dict)  # what the run trains on (``training_domain``), into the checkpoint

    def record(self, row: dict, model: nn.Module, cfg: TrainConfig | dict, val_scores: np.ndarray,
               val_labels: np.ndarray) -> bool:
        """Add an epoch; when its validation ``select_metric`` is the best so far (ties: the other metrics),
        keep a checkpoint of ``model`` (the EMA when there is one) with the threshold chosen on these
        validation scores, and return True. Test numbers never take part."""
        cfg = TrainConfig.of(cfg)
        self.history.append(row)
        improved = selection_key(row, cfg.select_metric) > selection_key(self.best, cfg.select_metric)
        if improved:
            self.best = {"val_acc": row["val_acc"], "val_loss": row["val_loss"], "val_auc": row["val_auc"],
                         "epoch": row["epoch"]}
            threshold = metrics.choose_threshold(val_labels, val_scores, cfg.threshold_rule)
            ckpt = make_checkpoint(model, cfg.image_size, run=cfg.run, threshold=threshold,
                                   dataset=cfg.dataset, tta=cfg.tta, pseudo_fakes=cfg.pseudo_fakes,
                                   domain=self.domain,
                                   metrics={"best_epoch": row["epoch"], "best_val_acc": row["val_acc"],
                                            "best_val_auc": row["val_auc"], "select_metric": cfg.select_metric,
                                            "threshold_rule": cfg.threshold_rule, "ema_decay": cfg.ema_decay})
            self.best_ckpt, self.stale = ckpt, 0
        else:
            self.stale += 1
        self.stopped = bool(cfg.early_stopping_patience and self.stale >= cfg.early_stopping_patience)
        return improved


def selection_key(row: dict, metric: str) -> tuple[float, ...]:
    """Order of validation results, larger is better: ``metric`` first, then the others (an AUC that is
    NaN, on a one-class split, counts as lowest)."""
    auc = row["val_auc"] if math.isfinite(row["val_auc"]) else -1.0
    acc, neg_loss = row["val_acc"], -row["val_loss"]
    return {"acc": (acc, neg_loss, auc), "auc": (auc, neg_loss, acc), "loss": (neg_loss, auc, acc)}[metric]


def build_model(cfg: TrainConfig, device: torch.device) -> nn.Module:
    """The run's model, checked (name, model_params, frozen_layers), on the device."""
    check_model(cfg)
    try:
        model = get_model(cfg.model, image_size=cfg.image_size, **cfg.model_params)
    except (ValueError, TypeError) as e:  # the builder rejects a size or a model_params value
        raise ParamsError(f"{source_of(cfg)}: run '{cfg.run}' cannot build model '{cfg.model}': {e}") from e
    check_frozen_layers(model, cfg)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
    if cfg.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    return None


def step_scheduler(scheduler, val_loss: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    elif scheduler is not None:
        scheduler.step()


def wrap_model(model: nn.Module, cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(the model evaluation runs, the model training runs): compiled if asked, and under torchrun the
    training one in DDP (evaluation needs no collectives per batch)."""
    eval_model = torch.compile(model) if cfg.compile else model
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.nn.parallel import DistributedDataParallel

        return eval_model, DistributedDataParallel(eval_model,
                                                   device_ids=[device.index] if device.type == "cuda" else None)
    return eval_model, eval_model


def run_epoch(t: Trainer, epoch: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Train one epoch, then score validation (and test, with ``eval_test_every_epoch``) through ``t.scorer``
    (the EMA when there is one): the epoch's row, and the validation p(fake) and labels."""
    set_trainable(t.model, t.cfg, epoch)
    t.loaders["train"].sampler.set_epoch(epoch)
    tr_loss, tr_acc, seen = train_one_epoch(t, epoch)
    vp, vy, va_loss = evaluate(t, "val", f"epoch {epoch} val")
    row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": va_loss, "val_acc": _acc(vp, vy),
           "val_auc": _auc(vp, vy), "lr": t.optimizer.param_groups[0]["lr"]}
    if t.cfg.eval_test_every_epoch:
        tp, ty, te_loss = evaluate(t, "test", f"epoch {epoch} test")
        row.update(test_loss=te_loss, test_acc=_acc(tp, ty), test_auc=_auc(tp, ty))
    return {**row, "train_images": seen}, vp[:, 1], vy


def _epoch_line(cfg: TrainConfig, row: dict, improved: bool) -> str:
    return (f"{cfg.run} epoch {row['epoch']}/{cfg.epochs}: train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} "
            f"auc {row['val_auc']:.4f}"
            + (f" | test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f} auc {row['test_auc']:.4f}"
               if "test_acc" in row else "")
            + (" *" if improved else ""))


def run_stage(params: dict, run: str, data_dir: str | Path = "data", models_dir: str | Path = "models",
              metrics_dir: str | Path = "metrics/train", progress: bool = True) -> dict:
    """The training stage of ``run`` (a key of ``runs``): ``fit`` with its merged config ->
    models/<run>.pt and metrics/train/<run>/."""
    return fit(TrainConfig.from_params(params, run), params, data_dir, models_dir, metrics_dir, progress)


def fit(cfg: TrainConfig | dict, params: dict, data_dir: str | Path = "data", models_dir: str | Path = "models",
        metrics_dir: str | Path = "metrics/train", progress: bool = True, resume: bool = True,
        cache_dir: str | Path | None = None) -> dict:
    """Train one run as configured by ``cfg``, its training config (``TrainConfig.from_params``; a run's merged
    section of a loaded params file is made one).

    Under ``torchrun --nproc_per_node=N`` it trains with DistributedDataParallel (each
    process takes ``batch_size / N`` of every batch; metrics are reduced over processes;
    only rank 0 writes files). After every epoch the full training state is saved to
    ``models/.<run>.state.pt``; a rerun with the same configuration resumes from it and
    ends with the same numbers as an uninterrupted run. ``resume=False`` starts over.
    """
    cfg = TrainConfig.of(cfg)
    run = cfg.run
    rank, world, device = init_distributed(params["device"])
    main, progress = rank == 0, progress and rank == 0
    ckpt_path, spath = Path(models_dir) / f"{run}.pt", state_path(models_dir, run)
    if main:  # an output folder that cannot be written stops the run now, not after an epoch
        check_writable(ckpt_path)
        check_writable(Path(metrics_dir) / run / "metrics.json")  # written by dvclive
    seed_everything(params["seed"])
    model = build_model(cfg, device)
    rows = read_manifest(Path(data_dir) / cfg.dataset / "manifest.csv")
    loaders = make_loaders(cfg, rows, model, params["seed"], device, cache_dir, progress)
    optimizer = make_optimizer(model, cfg)
    scheduler, scaler = make_scheduler(optimizer, cfg), grad_scaler(device, cfg.amp)
    set_trainable(model, cfg, 1)  # before DDP, which registers the parameters that take gradients
    eval_model, run_model = wrap_model(model, cfg, device)
    ema = make_ema(model, cfg)
    t = Trainer(cfg, model, loaders, optimizer, scaler, device, run_model, ema, progress).with_scorer(
        ema.module if ema is not None else eval_model)
    key = resume_key(cfg, params, rows, world)
    done = (load_state(spath, key, model, optimizer, scheduler, scaler, ema) if resume else None) or Progress()
    if main and done.history:
        print(f"{run}: resuming after epoch {len(done.history)} from {spath}")
        done.best_ckpt.save(ckpt_path)  # DVC removes a stage's outs before rerunning it
    done.domain = training_domain(params, cfg, rows)
    live = _open_live(cfg, metrics_dir, done.history) if main else None
    if main:
        print(f"{run}: {cfg.model} ({num_params(model):,} params) on {cfg.dataset} "
              f"({', '.join(f'{k} {len(v.dataset)}' for k, v in loaders.items())}) on {device}"
              + (f" x {world} processes" if world > 1 else ""))
    t0 = time.perf_counter() - done.elapsed
    for epoch in range(len(done.history) + 1, cfg.epochs + 1):
        if done.stopped:
            break
        row, val_scores, val_labels = run_epoch(t, epoch)
        if main:
            _log_epoch(live, row)
        improved = done.record(row, t.kept, cfg, val_scores, val_labels)
        if main:
            if improved:
                done.best_ckpt.save(ckpt_path)
            print(_epoch_line(cfg, row, improved))
        step_scheduler(scheduler, row["val_loss"])
        if done.stopped and main:
            print(f"{run}: early stop after epoch {epoch} "
                  f"({done.stale} epochs without val-{cfg.select_metric} gain)")
        done.elapsed = time.perf_counter() - t0
        if main:  # after every epoch, so a rerun goes on from here
            save_state(spath, key, model, optimizer, scheduler, scaler, done, ema)
    return _finish(t, done, live, (ckpt_path, spath), train_time=time.perf_counter() - t0)


def _open_live(cfg: TrainConfig, metrics_dir: str | Path, history: list[dict]):
    """dvclive's logger for the run; a resumed run rewrites the epochs it already has (no gaps, no duplicates)."""
    from dvclive import Live

    live = Live(dir=str(Path(metrics_dir) / cfg.run), dvcyaml=None, save_dvc_exp=False, report=None,
                monitor_system=False)
    for row in history:
        _log_epoch(live, row)
    return live


def _finish(t: Trainer, done: Progress, live, paths: tuple[Path, Path], train_time: float) -> dict:
    """The run's summary (test figures at the best validation epoch) into metrics.json and the checkpoint (the
    first of ``paths``); the resume state (the second) removed."""
    cfg, model, (ckpt_path, spath) = t.cfg, t.kept, paths
    best_row = done.history[done.best["epoch"] - 1]
    if "test_acc" in best_row:
        test_acc, test_auc = best_row["test_acc"], best_row["test_auc"]
    else:  # evaluate the best-validation weights once on test
        model.load_state_dict(done.best_ckpt.state_dict)
        tp, ty, _ = evaluate(t, "test", "test")
        test_acc, test_auc = _acc(tp, ty), _auc(tp, ty)
    summary = {"best_val_acc": done.best["val_acc"],
               "best_val_auc": done.best["val_auc"], "best_epoch": done.best["epoch"],
               "test_acc_at_best_val": test_acc, "test_auc_at_best_val": test_auc,
               "threshold": done.best_ckpt.threshold, "epochs_run": len(done.history),
               "num_params": num_params(model), "train_images_per_epoch": done.history[-1]["train_images"]}
    summary.update({f"final_{k}": v for k, v in done.history[-1].items() if k not in ("epoch", "lr", "train_images")})
    if live is not None:
        for key, value in summary.items():  # metrics.json: no timings, so equal inputs give equal files
            live.summary[key] = value
        live.end()
        done.best_ckpt = replace(done.best_ckpt, metrics={**done.best_ckpt.metrics, **summary,
                                                          "train_time_s": round(train_time, 2),
                                                          "history": done.history})
        done.best_ckpt.save(ckpt_path)  # the checkpoint carries the run's summary too
        spath.unlink(missing_ok=True)
        print(f"{cfg.run}: best val {cfg.select_metric} at epoch {done.best['epoch']} (val acc "
              f"{done.best['val_acc']:.4f}, auc {done.best['val_auc']:.4f}), test there: acc {test_acc:.4f}, auc "
              f"{test_auc:.4f}; threshold {done.best_ckpt.threshold:.4f} ({cfg.threshold_rule}) "
              f"({train_time:.0f} s) -> {ckpt_path}")
    barrier()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return {**summary, "train_time_s": round(train_time, 2)}


def _log_epoch(live, row: dict) -> None:
    live.step = row["epoch"]
    for key, value in row.items():
        if key not in ("epoch", "train_images"):
            split, _, name = key.partition("_")
            live.log_metric(f"{split}/{name}" if name else key, value, plot=True)
