"""Float codebooks for one layer (uniform Eq. 5 levels, 1-D k-means), per layer or per output channel, and the
nearest-centroid rule that every method and the retraining share (ties go to the lower centroid)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..nets import Net
from ..quant import pad_rows, round_half_up
from .interface import FloatCodebook, QuantizerInput


def uniform_codebook(w: np.ndarray, bits: int):
    """Eq. 5 with a per-layer step: q = floor(w / step + 1/2), clamped to the symmetric levels -L..L,
    L = 2^(b-1) - 1. The step is the one minimising the mean squared weight error among 200 candidates from
    max|w|/(10 L) to max|w|/L (covering the whole range makes outliers drag the step: at 2 bits nearly every
    weight becomes 0). One bit has no zero level: the levels are +-step, chosen by sign, step = mean|w|."""
    w = w.reshape(-1).astype(np.float64)
    if bits == 1:
        step = float(np.mean(np.abs(w)))
        return np.array([-step, step]), (w >= 0).astype(np.int64)
    levels = 2 ** (bits - 1) - 1
    largest = float(np.max(np.abs(w)))
    if largest == 0.0:
        return np.array([0.0]), np.zeros(w.size, np.int64)

    candidates = largest / levels * np.linspace(0.1, 1.0, 200)
    errors = [float(np.mean((uniform_codes(w, step, levels) * step - w) ** 2)) for step in candidates]
    step = float(candidates[int(np.argmin(errors))])
    return np.arange(-levels, levels + 1) * step, uniform_codes(w, step, levels) + levels


def uniform_codes(w: np.ndarray, step: float, levels: int) -> np.ndarray:
    """Eq. 5: clamp(floor(w / step + 1/2), -levels, levels)."""
    return np.clip(round_half_up(w / step), -levels, levels).astype(np.int64)


def kmeans_codebook(w: np.ndarray, bits: int, seed: int, init: np.ndarray | None = None):
    """1-D k-means with 2^b centroids (scikit-learn, fixed seed; warm-started from `init` when given).
    A layer with no more distinct values than centroids keeps its values exactly; empty clusters are dropped."""
    from sklearn.cluster import KMeans  # imported here: a second of every command's start, used by k-means only
    from sklearn.exceptions import ConvergenceWarning

    w = w.reshape(-1).astype(np.float64)
    distinct = np.unique(w)
    k = 2 ** bits
    if len(distinct) <= k:
        return distinct, np.searchsorted(distinct, w)
    if init is not None and len(init) == k and len(np.unique(init)) == k:
        km = KMeans(n_clusters=k, init=np.sort(init).reshape(-1, 1), n_init=1, random_state=seed)
    else:
        km = KMeans(n_clusters=k, n_init=3, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = km.fit_predict(w.reshape(-1, 1))
    centers = km.cluster_centers_.reshape(-1)
    used = np.unique(labels)
    centers = centers[used]
    labels = np.searchsorted(used, labels)
    order = np.argsort(centers, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return centers[order], rank[labels]


def per_row(codebook_fn, w: np.ndarray, per_channel: bool, init: np.ndarray | None = None):
    """codebook_fn(weights, init) -> (centroids, assignment) for the whole layer, or, per channel, for each output
    channel's weights w[o]: centroids [C_OUT, K] (rows padded with their last value, quant.pad_rows) and the
    assignment in w's flat order (row o's indices refer to centroids[o])."""
    if not per_channel:
        return codebook_fn(w, init)
    rows = w.reshape(w.shape[0], -1)
    books = [codebook_fn(row, None if init is None else init[o]) for o, row in enumerate(rows)]
    return pad_rows([c for c, _ in books]), np.concatenate([a for _, a in books])


def centroid_values(centroids: np.ndarray, assignment: np.ndarray, shape) -> np.ndarray:
    """Each weight's centroid: centroids[assignment] (per layer) or centroids[o, assignment[o]] (per channel)."""
    centroids = np.asarray(centroids)
    if centroids.ndim == 1:
        return centroids[assignment].reshape(shape)
    return np.take_along_axis(centroids, np.asarray(assignment).reshape(centroids.shape[0], -1), 1).reshape(shape)


def nearest_index(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted `values` ([K], or [C_OUT, K] per output channel) to each weight, in
    w's flat order per row: ties between two centroids go to the lower one (searchsorted on the midpoints)."""
    mids = (values[..., 1:] + values[..., :-1]) / 2
    if values.ndim == 1:
        return torch.bucketize(w.reshape(-1), mids)
    return torch.searchsorted(mids.contiguous(), w.reshape(values.shape[0], -1).contiguous())


def gather(values: torch.Tensor, index: torch.Tensor, shape) -> torch.Tensor:
    """values[index] (per layer) or values[o, index[o]] (per channel), as a tensor of `shape`."""
    return (values[index] if values.ndim == 1 else torch.gather(values, 1, index)).reshape(shape)


def nearest(centroids: np.ndarray):
    """w -> the nearest centroid of each weight (torch, differentiable only through the STE around it).
    centroids [K] for the layer or [C_OUT, K] per output channel."""
    c = torch.as_tensor(np.sort(centroids, axis=-1), dtype=torch.float32)

    def quantize(w: torch.Tensor) -> torch.Tensor:
        values = c.to(w.device, w.dtype)  # the weights' device: retraining may run on a GPU
        return gather(values, nearest_index(values, w.detach()), w.shape)
    return quantize


def nearest_assignment(centroids: np.ndarray, w: np.ndarray) -> FloatCodebook:
    """(sorted centroids, index of each weight's nearest centroid), with the tie rule of nearest()."""
    c = np.sort(np.asarray(centroids, dtype=np.float64), axis=-1)
    index = nearest_index(torch.as_tensor(c, dtype=torch.float32), torch.as_tensor(w, dtype=torch.float32))
    return FloatCodebook(c, index.reshape(-1).numpy().astype(np.int64))


class TrainableCodebook(torch.nn.Module):
    """A layer's codebook as parameters ([K], or [C_OUT, K] per output channel): forward value of a weight = the
    (sorted) centroid nearest to it. Gradients reach each centroid summed over the weights assigned to it, and the
    weights through the straight-through estimator."""

    def __init__(self, centroids: np.ndarray):
        super().__init__()
        self.centroids = torch.nn.Parameter(torch.as_tensor(np.sort(centroids, axis=-1), dtype=torch.float32))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # frozen centroids are not moved with the trained tensors: follow the weights' device
        values, _ = torch.sort(self.centroids.to(w.device), dim=-1)
        chosen = gather(values, nearest_index(values.detach(), w.detach()), w.shape)
        return w + (chosen - w).detach() + (chosen - chosen.detach())

    def assignment(self, w: torch.Tensor) -> FloatCodebook:
        values, _ = torch.sort(self.centroids.detach(), dim=-1)
        return FloatCodebook(values.double().numpy(), nearest_index(values, w.detach()).reshape(-1).numpy())


def layer_weights(net: Net, i: int) -> np.ndarray:
    """Layer i's weights as float64 numpy (the array every codebook is computed from)."""
    return net.layers[i].weight.detach().double().numpy()


def layer_kmeans(job: QuantizerInput, i: int, bits: int, init: np.ndarray | None = None) -> FloatCodebook:
    """k-means codebook of layer i of job.net as it is now, per output channel where the job asks for it."""
    return FloatCodebook(*per_row(lambda w, start: kmeans_codebook(w, bits, job.seed, init=start),
                                  layer_weights(job.net, i), i in job.per_channel, init))


def load_book_weights(net: Net, books: dict[int, FloatCodebook]) -> None:
    """Set each listed layer's weights to their centroids (retraining starts from the quantized weights)."""
    with torch.no_grad():
        for i, (centroids, assignment) in books.items():
            weight = net.layers[i].weight
            weight.copy_(torch.from_numpy(centroid_values(centroids, assignment, weight.shape)))
