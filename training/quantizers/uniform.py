"""Post-training uniform quantization: Eq. 5 levels at the step that minimises each layer's weight error."""
from __future__ import annotations

from .codebooks import layer_weights, per_row, uniform_codebook
from .interface import FloatCodebook, QuantizerInput, QuantizerOutput, register


@register("uniform")
def uniform(job: QuantizerInput) -> QuantizerOutput:
    books = {i: FloatCodebook(*per_row(lambda w, _, b=b: uniform_codebook(w, b), layer_weights(job.net, i),
                                       i in job.per_channel))
             for i, b in job.bits.items()}
    return QuantizerOutput(books, dict(job.shifts))
