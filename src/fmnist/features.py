"""What the last layer sees: penultimate-layer features and their 2-D map (the report's t-SNE)."""

from __future__ import annotations

import numpy as np
import torch

from .ensemble import Ensemble
from .evaluation import predict_logits


def _last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The last nn.Linear in registration order: every registry model ends with one."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take features from.")
    return linears[-1]


@torch.inference_mode()
def penultimate_features(
    model: torch.nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    """The input of the model's last Linear layer (N, D) for uint8 images (N, 28, 28).

    For an ensemble, every member's penultimate features side by side (N, D1 + D2 + ...).
    """
    ensembles = [m for m in model.modules() if isinstance(m, Ensemble)]
    layers = [_last_linear(m) for m in ensembles[0].members] if ensembles else [_last_linear(model)]
    captured: list[list[torch.Tensor]] = [[] for _ in layers]
    hooks = [
        layer.register_forward_hook(
            lambda _m, inputs, _out, store=store: store.append(
                inputs[0].detach().flatten(1).cpu().clone()
            )
        )
        for layer, store in zip(layers, captured, strict=True)
    ]
    try:
        predict_logits(model, torch.as_tensor(images), batch_size=batch_size)
    finally:
        for hook in hooks:
            hook.remove()
    if not captured[0]:
        return np.empty((0, 0), np.float32)
    return torch.cat([torch.cat(store) for store in captured], dim=1).float().numpy()


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """Project features (N, D) to 2-D points (N, 2) with scikit-learn's PCA or t-SNE."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}.")
    if features.ndim != 2 or len(features) < 5:
        raise ValueError(f"features must be (N, D) with N >= 5, got shape {features.shape}.")
    # PCA first: it removes noise dimensions and makes t-SNE several times faster.
    n_pca = 2 if method == "pca" else min(50, *features.shape)
    points = PCA(n_components=n_pca, random_state=seed).fit_transform(features)
    if method == "tsne":
        perplexity = min(30.0, (len(features) - 1) / 3)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        points = tsne.fit_transform(points)
    return points
