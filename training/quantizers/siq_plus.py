"""siq+: SIQ's retraining loop (siq.py) with the ingredients of SIQPlusConfig plugged into its hooks:
FC layers retrained too, trainable centroids, distillation from the float network, progressive weight and
activation bits, and learned (power-of-two or real, then folded) activation steps."""
from __future__ import annotations

import copy

import torch

from ..graph import POOL_POINTS
from ..quant import TrainingHooks, input_point_of
from .codebooks import TrainableCodebook
from .interface import FloatCodebook, QuantizerInput, QuantizerOutput, register
from .siq import Retraining, retrain
from .steps import LearnedSteps, fold_step_scales


class PlusHooks(TrainingHooks):
    """TrainingHooks whose weight quantizers already carry their own straight-through estimator, and whose
    activation steps may be trained (LearnedSteps)."""

    def __init__(self, act_bits, shifts, weight_quantizers, steps: LearnedSteps | None = None,
                 input_bits: int | None = None, point_widths: dict | None = None, channel_octaves: dict | None = None):
        super().__init__(act_bits, shifts, weight_quantizers, input_bits, point_widths, channel_octaves)
        self.steps = steps

    def weight(self, index, w):
        quantizer = self.weight_quantizers.get(index)
        return w if quantizer is None else quantizer(w)

    def _act(self, point, x):
        return super()._act(point, x) if self.steps is None else self.steps.quantize(point, x)


class PlusRetraining(Retraining):
    """SIQ plus the SIQPlusConfig ingredients. Every round runs: with progressive bits the early rounds train at
    wider widths than the target, so only the last round's codebook is at the widths asked for."""
    name = "siq+"

    def __init__(self, job: QuantizerInput):
        self.plus = job.config.plus
        # the float network as it came, before any retraining changes job.net: the distillation teacher
        self.teacher = copy.deepcopy(job.net).eval()
        super().__init__(job)
        cfg = job.config
        pools = {p: input_point_of(job.net.arch, p) for p in job.shifts
                 if p >= 0 and isinstance(job.net.arch.layers[p], POOL_POINTS)}
        self.steps = (LearnedSteps(job.shifts, cfg.act_bits, cfg.input_bits, self.plus.real_steps, cfg.point_widths,
                                   pools, job.channel_octaves) if self.plus.learn_act_steps else None)
        self.loss_fn = self._loss

    @property
    def quantize_fc(self) -> bool:
        return self.plus.quantize_fc

    def round_bits(self, round_index: int) -> dict[int, int]:
        """target + rounds - 1 - round (at most 8) with progressive bits, else the target."""
        rounds = self.job.config.siq.rounds
        extra = rounds - 1 - round_index if self.plus.progressive else 0
        return {i: min(8, self.job.bits[i] + extra) for i in self.retrained}

    def round_act_bits(self, round_index: int) -> int:
        """One bit a round from target + progressive_acts down to the target, reached by the last round at the
        latest."""
        rounds, act_bits = self.job.config.siq.rounds, self.job.config.act_bits
        extra = min(max(0, self.plus.progressive_acts - round_index), rounds - 1 - round_index)
        return min(8, act_bits + extra)

    def _loss(self, batch, logits, labels):
        """Cross-entropy, mixed with the KL divergence to the teacher's softened outputs when distilling."""
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if self.plus.distill <= 0:
            return loss
        temperature = self.plus.temperature
        with torch.no_grad():
            target = torch.softmax(self.teacher.to(batch.device)(batch) / temperature, dim=1)
        soft = torch.nn.functional.kl_div(torch.log_softmax(logits / temperature, dim=1), target,
                                          reduction="batchmean") * temperature**2
        return (1 - self.plus.distill) * loss + self.plus.distill * soft

    def begin_round(self, round_index: int) -> None:
        if self.steps is not None:
            self.steps.set_bits(self.round_act_bits(round_index))

    def weight_quantizers(self, books: dict[int, FloatCodebook]) -> dict:
        codebooks = {i: TrainableCodebook(books[i].centroids) for i in self.retrained}
        if not self.plus.finetune_centroids:
            for book in codebooks.values():
                book.centroids.requires_grad_(False)
        return codebooks

    def hooks(self, quantizers: dict) -> PlusHooks:
        cfg = self.job.config
        return PlusHooks(cfg.act_bits, self.shifts, quantizers, self.steps, cfg.input_bits, cfg.point_widths,
                         self.job.channel_octaves)

    def extra_params(self, quantizers: dict) -> list:
        params = [b.centroids for b in quantizers.values() if b.centroids.requires_grad]
        if self.steps is not None:
            params.append({"params": list(self.steps.parameters()), "lr": self.plus.step_lr})
        return params

    def end_round(self, round_index: int) -> None:
        if self.steps is not None:
            self.shifts = self.steps.shifts()

    def trained_books(self, quantizers: dict, books: dict[int, FloatCodebook]) -> dict[int, FloatCodebook]:
        """The tuned centroids, each weight at its nearest one."""
        return {i: quantizers[i].assignment(self.job.net.layers[i].weight) for i in self.retrained}

    def round_record(self, round_index: int) -> dict:
        return {"bits": {str(i): b for i, b in self.round_bits(round_index).items()},
                **({"act_bits": self.steps.bits} if self.plus.progressive_acts else {}),
                "shifts": {str(p): s for p, s in self.shifts.items()}}

    def converged(self, assignment_change: float) -> bool:
        return False

    def warm_start(self, books: dict[int, FloatCodebook], trained: dict[int, FloatCodebook]) -> dict:
        """Re-cluster from the tuned centroids (kmeans_codebook uses them where the sizes allow)."""
        return {i: trained[i].centroids for i in self.retrained}

    def finish(self, books: dict[int, FloatCodebook]) -> None:
        if self.steps is not None and self.steps.real:
            self.step_scales = self.steps.scales()
            fold_step_scales(self.job.net, books, self.step_scales)


@register("siq+", retrains=True, ingredients=True)
def siq_plus(job: QuantizerInput) -> QuantizerOutput:
    """SIQ plus centroid fine-tuning, distillation from the float model, progressive bit lowering and FC layers
    (SIQPlusConfig); job.net is retrained in place."""
    return retrain(job, PlusRetraining(job))
