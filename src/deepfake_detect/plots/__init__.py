"""All figures: curves (ROC, DET, training) and image figures (grids, saliency, Grad-CAM)."""
