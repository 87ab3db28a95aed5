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


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.yaml: 'device' is cuda but no CUDA device is available (use auto or cpu)")
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


def default_num_workers(requested: int = -1) -> int:
    """-1: one loader process per spare core (at most 4); on a 2-core machine, 1."""
    if requested >= 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (no grad scaler needed); a no-op on CPU."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.inference_mode()
def predict(model: nn.Module, loader, device: torch.device, amp: bool = True, channels_last: bool = False,
            desc: str = "predict", progress: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities (N, 2), labels (N,) and mean cross-entropy over a loader."""
    model.eval()
    probs, labels, loss_sum, n = [], [], 0.0, 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = batch[0], batch[1]
        x = to_device(x, device, channels_last)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
        probs.append(torch.softmax(logits, 1).cpu())
        labels.append(y.cpu())
    if n == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64), float("nan")
    return torch.cat(probs).numpy(), torch.cat(labels).numpy(), loss_sum / n
