"""Device, precision and batched inference: shared by training, evaluation and the CLI."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import TTA_MODES  # the views whose softmax probabilities ``predict`` averages (``tta_views``)
from .errors import UserError


class TTAError(UserError, ValueError):
    """An unknown test-time augmentation mode; the message names the option or field that gave it."""


class DeviceError(UserError, RuntimeError):
    """A device asked for that this machine does not have; the message names where it was asked for."""


def resolve_device(name: str = "auto", source: str = "params.yaml: 'device'") -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; ``source`` is where ``name`` was set (the params key,
    or ``--device``), named when CUDA is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{source} is cuda, but this machine has no CUDA device (set it to auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; deterministic kernels where torch has them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers(requested: int = -1, device: torch.device | None = None, cached: bool = False) -> int:
    """-1: sized to the machine. Loading from the decoded cache for CPU training costs a
    read and a multiply-add per image (~0.3 ms vs ~50 ms of compute), cheaper in-process
    than through worker IPC: 0 workers. Otherwise one loader process per spare core (at
    most 4; cores are shared among DDP processes)."""
    if requested >= 0:
        return requested
    if cached and device is not None and device.type == "cpu":
        return 0
    cores = cpu_cores() // max(1, dist_info()[1])
    return max(0, min(4, cores - 1))


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process (0, 1 outside ``torchrun``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device_name: str = "auto") -> tuple[int, int, torch.device]:
    """Join the process group when launched by ``torchrun`` (nccl on CUDA, gloo on CPU).

    Returns (rank, world size, this process's device).
    """
    import torch.distributed as dist

    device = resolve_device(device_name)
    if "WORLD_SIZE" not in os.environ:  # not launched by torchrun
        return 0, 1, device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over all processes (identity outside DDP)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    """Wait for every process (no-op outside DDP)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_predictions(probs: np.ndarray, labels: np.ndarray, loss: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Reassemble a split evaluated in shards (rank r holds items r, r+W, ...; see
    ``data.EpochSampler``) into the single-process order; identity outside DDP."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return probs, labels, loss
    world = dist.get_world_size()
    parts: list = [None] * world
    dist.all_gather_object(parts, (probs, labels, loss * len(labels)))
    n = sum(len(p[1]) for p in parts)
    all_probs, all_labels = np.zeros((n, probs.shape[1] if probs.ndim == 2 else 2), np.float32), np.zeros(n, np.int64)
    for r, (p, y, _) in enumerate(parts):
        all_probs[r::world], all_labels[r::world] = p, y
    return all_probs, all_labels, sum(p[2] for p in parts) / max(n, 1)


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA GPUs that have it, fp16 on those that do not (T4, V100);
    None (full precision) on CPU or when ``amp`` is off."""
    if not (enabled and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (``amp_dtype``); a no-op on CPU."""
    dtype = amp_dtype(device, enabled)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """Loss scaling, on only under fp16 autocast: fp16 gradients underflow without it, bf16 and
    fp32 ones do not. Disabled, its scale/step/update are exactly backward() and optimizer.step()."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device, enabled) == torch.float16)


class InputBuffer:
    """One float32 input batch, reused from step to step (CPU training and inference).

    A fresh 25 MB batch tensor per step costs the allocator and the page faults of touching
    new memory (~4 ms of a ~400 ms SimpleNet step on 2 cores); writing into the same one does
    not. Safe for a loop that is done with batch k (its backward included) before it loads
    batch k+1; a tensor still saved by a live autograd graph would raise, not be overwritten silently."""

    def __init__(self):
        self.buf: torch.Tensor | None = None

    def like(self, x: torch.Tensor) -> torch.Tensor:
        b = self.buf
        if b is None or b.shape != x.shape or b.device != x.device or b.stride() != x.stride():
            b = self.buf = torch.empty_strided(x.shape, x.stride(), dtype=torch.float32, device=x.device)
        return b


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False, normalise=None,
              buffer: InputBuffer | None = None) -> torch.Tensor:
    """Batch to ``device``; ``normalise`` (e.g. ``Preprocess.normalise`` for uint8 batches) runs there,
    into ``buffer`` when one is given."""
    x = x.to(device, non_blocking=True)  # keeps the memory format
    if x.ndim == 4:  # channels_last pays on CPU too (oneDNN convolutions): ~25 % train, ~40 % eval
        # a no-op for the trainer's batches (already channels_last); before normalising: uint8 is 4x cheaper to copy
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if normalise is not None:  # elementwise: keeps the memory format
        x = normalise(x) if buffer is None else normalise(x, out=buffer.like(x))
    return x


def check_tta(mode: str, what: str = "tta") -> str:
    """``mode`` if it is one of ``TTA_MODES``; else TTAError naming ``what`` (the option or field) and the mode."""
    if mode not in TTA_MODES:
        raise TTAError(f"{what}: unknown test-time augmentation {mode!r} (expected one of {', '.join(TTA_MODES)})")
    return mode


def tta_shift(x: torch.Tensor) -> int:
    """The ``flip_shift`` translation in pixels: 1/32 of the image side (at least 1)."""
    return max(1, min(x.shape[-2:]) // 32)


def _translate(x: torch.Tensor, dx: int, dy: int, s: int) -> torch.Tensor:
    """``x`` moved by (dx, dy) pixels (|dx|, |dy| <= s): out[..., i, j] = x[..., i - dy, j - dx], the border
    filled by reflection; the same size and resolution (reflect-pad by s, crop back: no resampling)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (s, s, s, s), mode="reflect")
    return padded[..., s - dy:s - dy + h, s - dx:s - dx + w]


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch (N, C, H, W) that test-time augmentation ``mode`` averages over, each (N, C, H, W):

    - ``none``: [x];
    - ``flip``: [x, x flipped left-right];
    - ``flip_shift``: those two, then each of them translated by s pixels right, left, down and up
      (s = ``tta_shift``: side // 32, at least 1), reflect-padded and cropped back: 10 views."""
    check_tta(mode)
    views = [x] if mode == "none" else [x, torch.flip(x, dims=(-1,))]
    if mode == "flip_shift":
        s = tta_shift(x)
        views += [_translate(v, dx, dy, s) for v in views[:2] for dx, dy in ((s, 0), (-s, 0), (0, s), (0, -s))]
    return views


@torch.inference_mode()
def predict(model: nn.Module, loader, device: torch.device, channels_last: bool = False, desc: str = "predict",
            progress: bool = True, normalise=None, tta: str = "none") -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities (N, 2), labels (N,) and mean cross-entropy over a loader, in the precision of the
    caller's autocast context (``detector.Detector.score_batches`` decides it: every scoring path, training's
    validation included, goes through a Detector).

    ``normalise``: applied to each batch on the device (for loaders of raw uint8 batches).
    ``tta``: one of ``TTA_MODES``; the probabilities are the mean of the softmax over the views of
    ``tta_views``, and the loss is the cross-entropy of that mean (-log of the averaged p(true class));
    with ``none``, exactly the plain softmax and cross-entropy."""
    check_tta(tta)
    model.eval()
    probs, labels, loss_sum, n = [], [], torch.zeros((), dtype=torch.float64, device=device), 0
    buffer = InputBuffer() if device.type == "cpu" else None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = batch[0], batch[1]
        labels.append(torch.as_tensor(y))
        x = to_device(x, device, channels_last, normalise, buffer)
        y = y.to(device, non_blocking=True)
        logits = []
        for v in tta_views(x, tta):
            logits.append(model(v if v is x else v.contiguous(memory_format=fmt)).float())
        if len(logits) == 1:
            p, log_p = torch.softmax(logits[0], 1), torch.log_softmax(logits[0], 1)
        else:  # log of the mean probability over the views: logsumexp - log V (stable)
            log_pv = torch.stack([torch.log_softmax(z, 1) for z in logits])
            p, log_p = log_pv.exp().mean(0), torch.logsumexp(log_pv, 0) - float(np.log(len(logits)))
        loss_sum += F.nll_loss(log_p, y, reduction="sum")  # stays on the device: no sync per batch
        n += len(y)
        probs.append(p)
    if n == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64), float("nan")
    return torch.cat(probs).cpu().numpy(), torch.cat(labels).cpu().numpy(), loss_sum.item() / n
