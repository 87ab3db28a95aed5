"""The explain stage: saliency maps, Grad-CAM (``saliency``) and a measured faithfulness, per run.

* **Faithfulness**: on demo fakes, whose ground-truth manipulation masks the generator
  wrote, the share of attribution energy inside the mask against the mask's share of
  the image (what a uniform attribution scores), their ratio (lift) and the
  pointing-game hit rate (is the arg-max inside the mask?).

Outputs per run: ``plots/explain/<run>_saliency.png`` (image/saliency pairs),
``<run>_gradcam.png`` (CAM overlays), ``<run>_means.png`` (mean saliency and mean CAM per
class) and ``metrics/explain/<run>.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import run_checkpoint, trained_on
from .data import Preprocess, load_masks, load_rgb, read_manifest, sample_rows
from .io import save_figure, write_json
from .saliency import gradcam, saliency


# ----------------------------------------------------------------------------- faithfulness
def mask_share(mask: np.ndarray) -> np.ndarray:
    """Share of the image the mask covers, per image (N, H, W) -> (N,)."""
    mask = np.asarray(mask, dtype=np.float64)
    return mask.reshape(len(mask), -1).mean(1)


def energy_in_mask(attr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``sum(attr * mask) / sum(attr)`` per image (attr >= 0; mask in [0, 1]).

    An all-zero attribution carries no information and scores like a uniform one (the
    mask share), so it neither helps nor hurts the mean.
    """
    attr = np.asarray(attr, dtype=np.float64).reshape(len(attr), -1)
    mask = np.asarray(mask, dtype=np.float64).reshape(len(mask), -1)
    if attr.shape != mask.shape:
        raise ValueError(f"attribution {attr.shape} and mask {mask.shape} differ in shape")
    if (attr < 0).any():
        raise ValueError("attributions must be non-negative")
    total = attr.sum(1)
    inside = (attr * mask).sum(1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), mask.mean(1))


def pointing_game(attr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image: is the attribution's arg-max inside the mask (mask > 0.5)? -> bool (N,)."""
    attr = np.asarray(attr).reshape(len(attr), -1)
    mask = np.asarray(mask).reshape(len(mask), -1)
    top = attr.argmax(1)
    return mask[np.arange(len(mask)), top] > 0.5


def faithfulness(attr: np.ndarray, mask: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean energy in mask, mask share (the uniform baseline), lift and pointing hit rate."""
    energy = float(energy_in_mask(attr, mask).mean())
    share = float(mask_share(mask).mean())
    return {
        f"{prefix}_energy_in_mask": round(energy, 4),
        f"{prefix}_mask_share": round(share, 4),
        f"{prefix}_lift": round(energy / share, 4) if share > 0 else float("nan"),
        f"{prefix}_pointing": round(float(pointing_game(attr, mask).mean()), 4),
    }


# ----------------------------------------------------------------------------- inputs
def load_batch(paths: Sequence[str], prep: Preprocess) -> tuple[torch.Tensor, np.ndarray]:
    """(normalised batch (N,3,S,S), the same pixels as uint8 (N,S,S,3) for display)."""
    u8 = torch.stack([prep.to_uint8(load_rgb(p)) for p in paths])
    return prep.normalise(u8), u8.permute(0, 2, 3, 1).numpy()


def attribute(det, paths: Sequence[str], batch_size: int = 16, desc: str = "explain",
              progress: bool = True) -> dict[str, np.ndarray]:
    """Saliency, Grad-CAM, p(fake) and display pixels for a list of image files, with ``det`` (a
    ``detector.Detector``): the maps from its fp32 torch model (they need gradients), p(fake) from the detector
    itself (``Detector.score_views``: its TTA, precision and calibration), as every other path scores."""
    model, prep = det.model, det.preprocess
    out: dict[str, list] = {"saliency": [], "gradcam": [], "p_fake": [], "images": []}
    starts = range(0, len(paths), batch_size)
    for i in tqdm(starts, desc=desc, leave=False, disable=not progress):
        batch = paths[i:i + batch_size]
        x, u8 = load_batch(batch, prep)
        out["saliency"].append(saliency(model, x).numpy())
        out["gradcam"].append(gradcam(model, x))
        out["p_fake"].append(det.score_views(u8, batch, batch_size).astype(np.float32))
        out["images"].append(u8)
    s = prep.image_size
    empty = {"saliency": (0, s, s), "gradcam": (0, s, s), "p_fake": (0,), "images": (0, s, s, 3)}
    return {k: np.concatenate(v) if v else np.zeros(empty[k], np.float32) for k, v in out.items()}


# ----------------------------------------------------------------------------- stage
class _Attributions:
    """The output of ``attribute`` for a list of paths, looked up by manifest rows."""

    def __init__(self, att: dict[str, np.ndarray], paths: Sequence[str]):
        self.att, self.index = att, {p: i for i, p in enumerate(paths)}

    def take(self, rows: list[dict], key: str) -> np.ndarray:
        return self.att[key][[self.index[r["path"]] for r in rows]]


def _choose(rows: list[dict], cfg: dict, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Test rows to explain, drawn with ``seed``: (reals, fakes) to show and average, and the fakes with a
    ground-truth mask scored for faithfulness."""
    rng = np.random.default_rng(seed)
    n = max(cfg["n_examples"], cfg["n_mean"])
    reals = sample_rows([r for r in rows if r["label"] == 0], n, rng)
    fakes = sample_rows([r for r in rows if r["label"] == 1], n, rng)
    masked = sample_rows([r for r in rows if r["label"] == 1 and r.get("mask")], cfg["n_faithfulness"], rng)
    return reals, fakes, masked


def _save_figures(out: Path, run: str, label: str, cam_layer: str, att: _Attributions, show: dict[str, list],
                  mean_rows: dict[str, list], masks: dict[str, np.ndarray]) -> None:
    """``<run>_saliency.png`` and ``<run>_gradcam.png`` of the ``show`` rows (real, then fake) and
    ``<run>_means.png``, the class means over ``mean_rows``; ground-truth masks outlined where known."""
    from .plots import images as plots

    shown = show["real"] + show["fake"]
    show_masks = [masks.get(r["path"]) for r in shown]
    titles = [f"{name} · p(fake) {p:.2f}" + (" · CAM=0" if cam.max() <= 0 else "")
              for name in ("real", "fake")
              for p, cam in zip(att.take(show[name], "p_fake"), att.take(show[name], "gradcam"))]
    images = att.take(shown, "images")
    save_figure(out / f"{run}_saliency.png", plots.saliency_pairs(
        images, att.take(shown, "saliency"), titles, masks=show_masks, n_rows=2,
        title=f"Saliency |∂p(fake)/∂x| — {label}"), dpi=110)
    save_figure(out / f"{run}_gradcam.png", plots.cam_overlays(
        images, att.take(shown, "gradcam"), titles, masks=show_masks, n_rows=2,
        title=f"Grad-CAM (fake class, layer {cam_layer}) — {label}"), dpi=110)
    fake_masks = [masks[r["path"]] for r in mean_rows["fake"] if r["path"] in masks]
    save_figure(out / f"{run}_means.png", plots.mean_maps(
        {name: _unit_mean(att.take(rs, "saliency")) for name, rs in mean_rows.items()},
        {name: att.take(rs, "gradcam") for name, rs in mean_rows.items()},
        mask=np.mean(fake_masks, 0) if fake_masks else None,
        title=f"Mean attribution per class — {label}"), dpi=110)


def _faithfulness_metrics(att: _Attributions, masked: list[dict], masks: dict[str, np.ndarray],
                          control: list[dict]) -> dict:
    """Faithfulness of saliency and Grad-CAM on the ``masked`` fakes, and the real-image ``control``."""
    if not masked:
        return {"faithfulness": "no masks in dataset", "n_images": 0}
    m = np.stack([masks[r["path"]] for r in masked])
    out = {**faithfulness(att.take(masked, "saliency"), m, "saliency"),
           **faithfulness(att.take(masked, "gradcam"), m, "gradcam")}
    # an all-zero CAM (no positive evidence for "fake" at the CAM layer) scores the mask share
    out["gradcam_zero_maps"] = round(float((att.take(masked, "gradcam").reshape(len(masked), -1).max(1) <= 0)
                                           .mean()), 4)
    out["mean_p_fake"] = round(float(att.take(masked, "p_fake").mean()), 4)
    # control: real images scored against the fakes' masks (cycled). A model that only looks at
    # facial features, not at the manipulation, scores as high here as on the fakes.
    if control:
        cm = np.stack([m[i % len(m)] for i in range(len(control))])
        for method in ("saliency", "gradcam"):
            out[f"{method}_energy_in_mask_real_control"] = round(
                float(energy_in_mask(att.take(control, method), cm).mean()), 4)
    out["n_images"] = len(masked)
    return out


def _print_summary(run: str, dataset: str, m: dict) -> None:
    if m["n_images"]:
        print(f"explain {run}: energy in mask saliency {m['saliency_energy_in_mask']:.3f} / "
              f"Grad-CAM {m['gradcam_energy_in_mask']:.3f} vs mask share {m['saliency_mask_share']:.3f}; "
              f"pointing {m['saliency_pointing']:.2f} / {m['gradcam_pointing']:.2f} "
              f"({m['n_images']} fakes)")
    else:
        print(f"explain {run}: figures written; no masks in dataset '{dataset}', faithfulness skipped")


def run_stage(params: dict, run: str, data_dir: str | Path = "data", models_dir: str | Path = "models",
              metrics_dir: str | Path = "metrics/explain", plots_dir: str | Path = "plots/explain",
              progress: bool = True) -> dict:
    """The explain stage of ``run``: figures and faithfulness metrics on the test split of its dataset."""
    from .engine import resolve_device, seed_everything

    seed_everything(params["seed"])
    cfg = params["explain"]
    path = run_checkpoint(params, run, models_dir)
    from .detector import Detector, stage_precision

    # the explain stage loads its checkpoint as every scoring path does; the attributions need gradients and
    # run on the fp32 torch model (detector.model), the precision setting is for scoring only
    device = resolve_device(params["device"])
    det = Detector.load(path, device, precision=stage_precision(params["evaluate-roc-det"]["precision"], device))
    model, ckpt = det.model, det.ckpt
    dataset = trained_on(ckpt, path)
    reals, fakes, masked = _choose(read_manifest(Path(data_dir) / dataset / "manifest.csv", "test"), cfg,
                                   params["seed"])
    paths = list(dict.fromkeys(r["path"] for r in reals + fakes + masked))  # explain each needed image once
    att = _Attributions(attribute(det, paths, cfg["batch_size"], desc=f"explain {run}", progress=progress),
                        paths)
    masks = {r["path"]: m for r, m in zip(masked, load_masks([r["mask"] for r in masked], det.image_size))}
    show = {"real": reals[:cfg["n_examples"]], "fake": fakes[:cfg["n_examples"]]}
    mean_rows = {"real": reals[:cfg["n_mean"]], "fake": fakes[:cfg["n_mean"]]}
    _save_figures(Path(plots_dir), run, f"{run} ({ckpt.arch}, {dataset} test)", model.cam_layer, att, show,
                  mean_rows, masks)
    metrics = {"run": run, "arch": ckpt.arch, "dataset": dataset, "cam_layer": model.cam_layer,
               "n_mean_real": len(mean_rows["real"]), "n_mean_fake": len(mean_rows["fake"]),
               **_faithfulness_metrics(att, masked, masks, mean_rows["real"])}
    write_json(Path(metrics_dir) / f"{run}.json", metrics)
    _print_summary(run, dataset, metrics)
    return metrics


def _unit_mean(maps: np.ndarray) -> np.ndarray:
    """Scale each map to mean 1, so the class mean shows *where* attribution goes, not how
    confident the model is (a saturated p(fake) has tiny gradients everywhere)."""
    m = maps.reshape(len(maps), -1).mean(1)
    return maps / np.where(m > 0, m, 1.0)[:, None, None]
