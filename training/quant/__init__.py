"""Fixed-point semantics shared by the fake-quant PyTorch model, the numpy integer reference and the C.

Numbers (all steps are powers of two, so every scaling is a shift and float64 holds every value exactly):
  * input:        x = pixel * 2^-8;  code = clamp(floor(x * 2^s + 1/2), 0, 2^a - 1);  value = code * 2^-s
  * feature maps: the output of every relu and lrn layer is quantized the same way with its own shift s
                  (unsigned, a bits; the relu makes them non-negative, the clamp is the relu); so is every concat
                  and every add not followed by a relu (an add followed by one is requantized to the relu's step).
  * signed maps:  a conv/dense output feeding only add layers (no relu): code = clamp(floor(x * 2^s + 1/2),
                  -2^(a-1), 2^(a-1) - 1), stored as code + 2^(a-1) (training/graph.py).
  * add:          both inputs' codes (zero points removed) shifted to the finer step, summed in int32, then
                  requantized like a conv's accumulator (round half up, clamp to the output point's range).
  * weights:      each conv/dense layer has an integer codebook c_k in [-2^(B-1), 2^(B-1) - 1] (B = codebook
                  bits, 8 by default) and an exponent e: weight = c_k * 2^-e; each weight is an index k (b bits).
                  A per-channel layer has one codebook row c_{o,k} per output channel o (same e for all rows).
  * biases:       integers on the accumulator grid: bias = bias_int * 2^-(s_in + e).
  * accumulator:  acc = bias_int + sum(code * c_k) is the pre-activation times 2^(s_in + e), an int32.
  * requantize:   out = clamp(floor(acc * 2^-(s_in + e - s_out) + 1/2), 0, 2^a - 1)  (Eq. 5, round half up).
  * lrn:          out = clamp(floor(q * m[S >> t] * 2^-F + 1/2), 0, 2^a - 1) with S the windowed sum of q^2 and
                  m a table of fixed-point reciprocals (lrn_table); the float model uses the very same table.
Calibration (calibrate.py): each tensor's shift s starts as the one (from -8 to 24) minimising the mean squared
quantization error on calibration images from the training split, measured on the float network's tensors (rule
"float"); the default rule "output" then refines the feature maps' shifts by what the quantized network outputs
(calibrate.output_shifts).

Modules: fixedpoint (Eq. 5, bit widths, quantization points), lrn (the integer lrn table), calibrate (activation
shifts), codebook (integer codebooks), equalize (cross-layer equalization of the float network), model
(QuantizedModel and its file), hooks (exact evaluation and quantization-aware training). Every name is re-exported here: callers import from `siq.training.quant`.
"""
from .calibrate import (CALIBRATION_RULES, CALIBRATION_SAMPLES, DEFAULT_CALIBRATION, best_shift, calibrate_shifts,
                        calibrate_steps)
from .codebook import (MAX_CODEBOOK_BITS, MAX_ROW_OFFSET, ROW_OFFSET_BYTES, LayerCodebook, channel_octave_limit,
                       channel_octave_limits, check_codebook_bits, codebook_entry_bytes, codebook_weights, pad_rows,
                       shared_rows, snap_codebook)
from .equalize import equalizable_pairs, equalize_channels
from .fixedpoint import (CHANNEL_STEP_MODES, INT32_MAX, LANE_BITS, SHIFT_RANGE, aligned_channel_points,
                         aligned_octave_limit, channel_step_points, check_bits, input_point_of, point_bits,
                         point_max_code, pool_rounding, quantizable, quantization_points, quantize_activation,
                         quantize_signed, relu_follows, round_half_up, signed_zero_point, step_scale)
from .hooks import ExactHooks, TrainingHooks, evaluate_exact, ste
from .lrn import LRN_TABLE_BITS, LRNTable, lrn_table, lrn_window_sum
from .model import QuantizedModel, load_quantized, quantize_biases, save_quantized

__all__ = ["CALIBRATION_RULES", "CALIBRATION_SAMPLES", "CHANNEL_STEP_MODES", "DEFAULT_CALIBRATION", "INT32_MAX",
           "LANE_BITS", "LRN_TABLE_BITS", "MAX_CODEBOOK_BITS", "MAX_ROW_OFFSET", "ROW_OFFSET_BYTES", "SHIFT_RANGE",
           "ExactHooks", "LRNTable", "LayerCodebook", "QuantizedModel", "TrainingHooks", "aligned_channel_points",
           "aligned_octave_limit", "best_shift", "calibrate_shifts", "calibrate_steps", "channel_octave_limit",
           "channel_octave_limits", "channel_step_points", "check_bits", "check_codebook_bits",
           "codebook_entry_bytes", "codebook_weights", "equalizable_pairs", "equalize_channels", "evaluate_exact",
           "input_point_of", "load_quantized",
           "lrn_table", "lrn_window_sum", "pad_rows", "point_bits", "point_max_code", "pool_rounding", "quantizable",
           "quantization_points", "quantize_activation", "quantize_biases", "quantize_signed", "relu_follows",
           "signed_zero_point", "round_half_up", "save_quantized", "shared_rows", "snap_codebook", "ste", "step_scale"]
