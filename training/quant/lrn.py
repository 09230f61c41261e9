"""lrn in integers: a table of fixed-point reciprocals indexed by the windowed sum of squared codes.

The float model, the numpy reference and the C all use the very same table, so lrn stays bit-exact."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..arch import LRN
from ..errors import SiqError
from .fixedpoint import INT32_MAX, round_half_up

LRN_TABLE_BITS = 8  # the lrn reciprocal table has at most 2^8 entries


@dataclass(frozen=True)
class LRNTable:
    index_shift: int          # t: table index = S >> t
    table: tuple[int, ...]    # m[i] ~ 2^F * 2^(s_out - s_in) / (k + alpha/size * S_mid * 2^(-2 s_in))^beta
    frac_bits: int            # F
    window_before: int        # channels c - before .. c + after enter S (PyTorch's window)
    window_after: int


def lrn_table(layer: LRN, shift_in: int, shift_out: int, bits: int) -> LRNTable:
    """Fixed-point reciprocal table for lrn on `bits`-bit input codes; every number here is computed once, in
    Python."""
    max_code = 2**bits - 1
    max_sum = layer.size * max_code * max_code
    index_shift = max(0, max_sum.bit_length() - LRN_TABLE_BITS)
    entries = (max_sum >> index_shift) + 1
    gain = 2.0 ** (shift_out - shift_in) / layer.k ** layer.beta  # the largest multiplier / 2^F
    frac_bits = 30
    while frac_bits > 1 and max_code * round_half_up(gain * 2.0**frac_bits) + 2.0 ** (frac_bits - 1) > INT32_MAX:
        frac_bits -= 1
    table = []
    for i in range(entries):
        s_mid = i * 2**index_shift + (2**index_shift - 1) / 2.0
        denominator = (layer.k + layer.alpha / layer.size * s_mid * 2.0 ** (-2 * shift_in)) ** layer.beta
        table.append(int(round_half_up(2.0 ** (frac_bits + shift_out - shift_in) / denominator)))
    if max_code * table[0] + 2 ** (frac_bits - 1) > INT32_MAX:
        raise SiqError(f"lrn: output step 2^-{shift_out} too fine for input step 2^-{shift_in}: "
                       "the fixed-point multiplier overflows int32")
    return LRNTable(index_shift, tuple(table), frac_bits, layer.size // 2, (layer.size - 1) // 2)


def lrn_window_sum(codes: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """S[c] = sum of q[c']^2 over c - before <= c' <= c + after (zero outside), along dim 1."""
    sq = torch.nn.functional.pad(codes * codes, (0, 0, 0, 0, before, after))
    channels = codes.shape[1]
    return sum(sq[:, j:j + channels] for j in range(before + after + 1))

