"""Image figures of the explain stage: dataset samples, saliency pairs, Grad-CAM overlays, mean maps.

Every function returns a ``matplotlib.figure.Figure`` (no pyplot state, safe in worker
processes); save it with ``deepfake_detect.io.save_figure``. Images are uint8 (H, W, 3)
arrays, attribution maps float (H, W). Where a ground-truth manipulation mask is known,
its outline is drawn in cyan so the reader can judge the attribution against it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

MASK_COLOUR = "cyan"
SALIENCY_CMAP = "inferno"
CAM_CMAP = "jet"  # what show_cam_on_image uses (OpenCV COLORMAP_JET)


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _outline(ax, mask: np.ndarray | None, style: str = "-") -> None:
    if mask is not None and np.ptp(mask) > 0:
        ax.contour(mask, levels=[0.5], colors=MASK_COLOUR, linewidths=0.9, linestyles=style)


def _groups(items: Sequence, n_rows: int) -> list[list]:
    per = int(np.ceil(len(items) / max(n_rows, 1)))
    return [list(items[i * per:(i + 1) * per]) for i in range(n_rows)]


def cam_overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Grad-CAM heat map over an image (pytorch-grad-cam's ``show_cam_on_image``) -> uint8 RGB."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(np.asarray(image, np.float32) / 255.0, np.clip(cam, 0, 1), use_rgb=True,
                             image_weight=image_weight)


def dataset_grid(real: Sequence[np.ndarray], fake: Sequence[np.ndarray], masks: np.ndarray | None = None,
                 title: str = "", panel: float = 1.8) -> Figure:
    """Rows of real and fake images (the course's first figure); demo fakes get a row of
    their ground-truth manipulation masks."""
    rows = [("real", list(real)), ("fake", list(fake))]
    if masks is not None:
        rows.append(("fake: mask", [np.clip(m, 0, 1) for m in masks]))
    ncols = max(len(r) for _, r in rows)
    fig = Figure(figsize=(panel * ncols + 0.4, panel * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for (name, imgs), ax_row in zip(rows, axes):
        for j, ax in enumerate(ax_row):
            _off(ax)
            if j < len(imgs):
                if imgs[j].ndim == 2:
                    ax.imshow(imgs[j], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(imgs[j])
        ax_row[0].set_ylabel(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def saliency_pairs(images: np.ndarray, maps: np.ndarray, titles: Sequence[str], masks: Sequence | None = None,
                   n_rows: int = 2, title: str = "", panel: float = 1.8, clip_pct: float = 99.0) -> Figure:
    """Image/saliency pairs: for each group (e.g. real, fake) a row of images above a row of
    their saliency maps. Each map is scaled to its own ``clip_pct`` percentile (the shared
    colour bar is relative), so faint and strong maps are both readable."""
    masks = list(masks) if masks is not None else [None] * len(images)
    idx = _groups(list(range(len(images))), n_rows)
    ncols = max(len(g) for g in idx)
    fig = Figure(figsize=(panel * ncols + 1.0, 2 * panel * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(2 * n_rows, ncols, squeeze=False)
    norm = Normalize(0, 1)
    for g, group in enumerate(idx):
        for j in range(ncols):
            a_img, a_sal = axes[2 * g, j], axes[2 * g + 1, j]
            _off(a_img)
            _off(a_sal)
            if j >= len(group):
                continue
            i = group[j]
            a_img.imshow(images[i])
            a_img.set_title(titles[i], fontsize=8)
            top = np.percentile(maps[i], clip_pct)
            a_sal.imshow(np.clip(maps[i] / top, 0, 1) if top > 0 else maps[i] * 0, cmap=SALIENCY_CMAP, norm=norm)
            _outline(a_sal, masks[i])
        axes[2 * g, 0].set_ylabel("image", fontsize=9)
        axes[2 * g + 1, 0].set_ylabel("saliency", fontsize=9)
    return _finish(fig, ScalarMappable(norm, colormaps[SALIENCY_CMAP]), axes[1::2, :],
                   f"|∂p(fake)/∂x| (per image, / {clip_pct:g}th pct)", masks, title, aspect=30)


def _finish(fig: Figure, mappable, axes, label: str, masks: Sequence, title: str, aspect: int) -> Figure:
    """Colour bar beside ``axes``, and the title (noting the mask outline when masks are drawn)."""
    cb = fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.8, aspect=aspect)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if any(m is not None for m in masks):
        title += "\n(cyan: ground-truth manipulation mask)"
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def cam_overlays(images: np.ndarray, cams: np.ndarray, titles: Sequence[str], masks: Sequence | None = None,
                 n_rows: int = 2, title: str = "", panel: float = 1.9) -> Figure:
    """Grad-CAM overlays (``show_cam_on_image``), one row per group (e.g. real, fake)."""
    masks = list(masks) if masks is not None else [None] * len(images)
    idx = _groups(list(range(len(images))), n_rows)
    ncols = max(len(g) for g in idx)
    fig = Figure(figsize=(panel * ncols + 1.0, panel * n_rows + 0.9), layout="constrained")
    axes = fig.subplots(n_rows, ncols, squeeze=False)
    for g, group in enumerate(idx):
        for j in range(ncols):
            ax = axes[g, j]
            _off(ax)
            if j >= len(group):
                continue
            i = group[j]
            ax.imshow(cam_overlay(images[i], cams[i]))
            ax.set_title(titles[i], fontsize=8)
            _outline(ax, masks[i])
    return _finish(fig, ScalarMappable(Normalize(0, 1), colormaps[CAM_CMAP]), axes, "Grad-CAM (per image, 0-1)",
                   masks, title, aspect=25)


def mean_maps(saliency: dict[str, np.ndarray], cams: dict[str, np.ndarray], mask: np.ndarray | None = None,
              title: str = "", panel: float = 2.6) -> Figure:
    """Mean saliency (top row) and mean Grad-CAM (bottom row) per class, side by side, one
    colour scale per row. ``mask``: the mean ground-truth mask of the fakes, outlined (dashed,
    where at least half of them are manipulated) on the fake panels."""
    classes = list(saliency)
    fig = Figure(figsize=(panel * len(classes) + 1.4, 2 * panel + 0.9), layout="constrained")
    axes = fig.subplots(2, len(classes), squeeze=False)
    for r, (name, maps, cmap, label) in enumerate([
            ("saliency", saliency, SALIENCY_CMAP, "mean saliency (each map / its mean)"),
            ("Grad-CAM", cams, CAM_CMAP, "mean Grad-CAM (0-1)")]):
        means = {c: maps[c].mean(0) if len(maps[c]) else None for c in classes}
        vals = [m for m in means.values() if m is not None]
        hi = max(float(np.percentile(m, 99.5)) for m in vals) if vals else 1.0
        norm = Normalize(0, 1.0 if name == "Grad-CAM" else max(hi, 1e-12))
        for c, ax in zip(classes, axes[r]):
            _off(ax)
            if means[c] is None:
                ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
                continue
            ax.imshow(means[c], cmap=cmap, norm=norm)
            if means[c].max() <= 0:
                ax.text(0.5, 0.9, "all maps are 0:\nno positive evidence at this layer", ha="center", va="top",
                        color="white", fontsize=8, transform=ax.transAxes)
            ax.set_title(f"{c} (n={len(maps[c])})", fontsize=9)
            if c == "fake":
                _outline(ax, mask, "--")
        axes[r, 0].set_ylabel(name, fontsize=10)
        cb = fig.colorbar(ScalarMappable(norm, colormaps[cmap]), ax=axes[r].tolist(), shrink=0.85, aspect=20)
        cb.set_label(label, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    if mask is not None:
        title += "\n(dashed cyan: region manipulated in >= half of the fakes)"
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def scored_cam(overlay: np.ndarray, title: str, dpi: int = 100) -> Figure:
    """One Grad-CAM overlay (uint8 RGB, from ``cam_overlay``), at its own pixel size or larger, titled (e.g.
    with its p(fake) and verdict), with the colour bar that says what red and blue mean."""
    h, w = overlay.shape[:2]
    side = max(3.0, max(w, h) / dpi)  # inches for the picture's longer side: room for the title's words
    fig = Figure(figsize=(side * w / max(w, h) + 1.3, side * h / max(w, h) + 0.5), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    _off(ax)
    ax.imshow(overlay)
    ax.set_title(title, fontsize=9)
    cb = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[CAM_CMAP]), ax=ax, shrink=0.85, aspect=20)
    cb.set_label("Grad-CAM for 'fake' (per image, 0-1)", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return fig
