"""Post-training adaptive quantization: 1-D k-means codebook of each layer (or of each output channel)."""
from __future__ import annotations

from .codebooks import layer_kmeans
from .interface import QuantizerInput, QuantizerOutput, register


@register("kmeans")
def kmeans(job: QuantizerInput) -> QuantizerOutput:
    return QuantizerOutput({i: layer_kmeans(job, i, b) for i, b in job.bits.items()}, dict(job.shifts))
