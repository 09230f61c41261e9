"""Supervised iterative quantization (§3.2), the one retraining loop that `siq` and `siq+` share.

Each round alternates (1) fix w, solve Q by k-means, and (2) fix Q, solve w by backprop started from the
quantized weights, with fake-quantized activations and weights in the forward pass (straight-through) and a
growing pull of w toward Q(w). The alternation ends on a retraining step: the result is the codebook the network
was trained with. (Re-clustering the latent weights once more would hand back a codebook never trained with: on
Fashion W3A4 after one round that was 48 % against 85 % for the trained one.)

What differs between methods is a Retraining strategy: `Retraining` is the paper's SIQ; siq_plus.py overrides
its hooks (which layers, at which widths, which weight quantizer, loss, extra parameters, when to stop, what to
do at the end). The loop itself, and so the order of every seeded step, is written only here."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from ..arch import Conv
from ..errors import SiqError
from ..nets import Hooks, Net
from ..quant import TrainingHooks
from ..train import fit
from .codebooks import layer_kmeans, layer_weights, load_book_weights, nearest, nearest_assignment
from .interface import FloatCodebook, QuantizerInput, QuantizerOutput, register


class Retraining:
    """The paper's SIQ: conv layers only (unless SIQConfig.quantize_fc), fixed codebooks at the target bits,
    cross-entropy, stop once fewer than SIQConfig.tolerance of the weights change centroid in a round."""
    name = "siq"
    loss_fn = None                       # fit's loss(batch, logits, labels); None = cross-entropy

    def __init__(self, job: QuantizerInput):
        self.job = job
        self.shifts = dict(job.shifts)   # the activation shifts in force (a strategy may train them)
        self.step_scales: dict[int, float] = {}
        arch = job.net.arch
        self.retrained = [i for i in job.bits if isinstance(arch.layers[i], Conv) or self.quantize_fc]
        if not self.retrained:  # check_method_fits refuses this before training; never divide by zero weights
            raise SiqError(f"{self.name} has no layer to retrain in architecture {arch.name!r}")

    @property
    def quantize_fc(self) -> bool:
        return self.job.config.siq.quantize_fc

    def round_bits(self, round_index: int) -> dict[int, int]:
        """Weight bits of each retrained layer during round `round_index` (0-based)."""
        return {i: self.job.bits[i] for i in self.retrained}

    def begin_round(self, round_index: int) -> None:
        """Called before the round's weights are loaded."""

    def weight_quantizers(self, books: dict[int, FloatCodebook]) -> dict:
        """Per retrained layer, w -> Q(w) for this round's forward pass and continuation penalty."""
        return {i: nearest(books[i].centroids) for i in self.retrained}

    def hooks(self, quantizers: dict) -> Hooks:
        cfg = self.job.config
        return TrainingHooks(cfg.act_bits, self.shifts, quantizers, cfg.input_bits, cfg.point_widths,
                             self.job.channel_octaves)

    def extra_params(self, quantizers: dict) -> list | None:
        """Parameters trained beside the network's (fit's extra_params)."""
        return None

    def end_round(self, round_index: int) -> None:
        """Called right after the round's retraining."""

    def trained_books(self, quantizers: dict, books: dict[int, FloatCodebook]) -> dict[int, FloatCodebook]:
        """Q(w) as the network was just trained: the same codebook, each weight at its nearest centroid."""
        return {i: nearest_assignment(books[i].centroids, layer_weights(self.job.net, i)) for i in self.retrained}

    def round_record(self, round_index: int) -> dict:
        """Fields of this round's history record beyond round, alpha, loss and assignment_change."""
        return {}

    def converged(self, assignment_change: float) -> bool:
        return assignment_change < self.job.config.siq.tolerance

    def warm_start(self, books: dict[int, FloatCodebook], trained: dict[int, FloatCodebook]) -> dict:
        """Per retrained layer, the centroids the next round's k-means starts from."""
        return {i: books[i].centroids for i in self.retrained}

    def finish(self, books: dict[int, FloatCodebook]) -> None:
        """Called once after the last round, before the layers that were not retrained get their k-means."""


def retrain(job: QuantizerInput, strategy: Retraining) -> QuantizerOutput:
    """SIQ's alternation under `strategy`; job.net is retrained in place."""
    net, scfg = job.net, job.config.siq
    retrained = strategy.retrained
    books = {i: layer_kmeans(job, i, b) for i, b in strategy.round_bits(0).items()}
    history = []
    alpha = scfg.alpha
    rounds = scfg.rounds            # >= 1: check_siq_config refused anything else before training
    with zero_rows_frozen(net, retrained):
        books = _alternate(job, strategy, books, history, alpha, rounds)
    strategy.finish(books)
    rest = {i: layer_kmeans(job, i, b) for i, b in job.bits.items() if i not in retrained}
    return QuantizerOutput({**books, **rest}, strategy.shifts, history, strategy.step_scales)


def _alternate(job: QuantizerInput, strategy: Retraining, books: dict, history: list, alpha: float,
               rounds: int) -> dict[int, FloatCodebook]:
    """The rounds of retrain(): each appends its record to `history`; the codebooks the network ends with."""
    net, scfg, retrained = job.net, job.config.siq, strategy.retrained
    for round_index in range(rounds):
        strategy.begin_round(round_index)
        load_book_weights(net, books)  # retraining starts from the quantized weights
        quantizers = strategy.weight_quantizers(books)
        penalty = continuation_penalty(net, quantizers, alpha)
        train_cfg = scfg.train_config(job.config.batch_size, seed=job.seed + 1000 * (round_index + 1))
        log = fit(net, job.train_x, job.train_y, train_cfg, strategy.hooks(quantizers), penalty,
                  desc=f"{strategy.name} round {round_index + 1}", extra_params=strategy.extra_params(quantizers),
                  loss_fn=strategy.loss_fn)
        strategy.end_round(round_index)
        trained = strategy.trained_books(quantizers, books)
        changed = sum(int(np.sum(trained[i].assignment != books[i].assignment)) for i in retrained)
        total = sum(books[i].assignment.size for i in retrained)
        history.append({"round": round_index + 1, "alpha": alpha, "loss": log[-1]["loss"],
                        **strategy.round_record(round_index), "assignment_change": changed / total})
        alpha *= scfg.growth
        if round_index == rounds - 1 or strategy.converged(changed / total):
            return trained
        init = strategy.warm_start(books, trained)
        books = {i: layer_kmeans(job, i, b, init=init[i]) for i, b in strategy.round_bits(round_index + 1).items()}
    return books


@contextmanager
def zero_rows_frozen(net: Net, layers):
    """Output channels whose weights are all zero (batch norm folding found them constant in training, or they
    were pruned) stay zero through retraining: their gradient is masked. Otherwise the straight-through estimator
    moves them while a per-channel codebook of the one value 0 hides the move from the forward pass, and the next
    round's k-means brings the channel back with weights no loss ever saw. AdamW leaves a weight with zero gradient
    and value 0 at 0. A network without all-zero rows retrains exactly as without this mask."""
    handles = []
    for i in layers:
        weight = net.layers[i].weight
        live = weight.detach().reshape(weight.shape[0], -1).ne(0).any(dim=1)
        if not bool(live.all()):
            mask = live.to(weight.dtype).reshape(-1, *([1] * (weight.dim() - 1)))
            handles.append(weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def continuation_penalty(net: Net, quantizers: dict, alpha: float):
    """alpha * sum over layers of ||w - Q(w)||^2 / ||w||^2 (norms taken at the start of the round)."""
    norms = {i: float(torch.mean(net.layers[i].weight.detach() ** 2)) + 1e-12 for i in quantizers}

    def penalty(model):
        total = 0.0
        for i, quantize in quantizers.items():
            w = model.layers[i].weight
            total = total + torch.mean((w - quantize(w).detach()) ** 2) / norms[i]
        return alpha * total
    return penalty


@register("siq", retrains=True)
def siq(job: QuantizerInput) -> QuantizerOutput:
    """Supervised iterative quantization as the paper has it."""
    return retrain(job, Retraining(job))
