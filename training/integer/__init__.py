"""The integer client: a typed IR (ir.py), lowered once from a QuantizedModel (lower.py) and executed by the
numpy reference (reference.py), whose functions carry the names of the C kernels they mirror."""
from .ir import (AddRequant, ConcatRequant, AvgPool2d, Conv2dGeneralRequant, Conv2dRequant, Conv2dRequantMaxpool, DenseRequant, DenseScores, IntegerModel, KernelStep,
                 LRNRequant, MaxPool2d, QuantizeInput)
from .lower import accumulator_bound, build_integer_model, check_lowerable, fuse
from .reference import (OP_FUNCTIONS, add_requant, concat_requant, avgpool2d, conv2d_general_requant, conv2d_requant, conv2d_requant_maxpool, dense_requant, dense_scores,
                        first_mismatch, integer_scores, lrn_requant, maxpool2d, pack_codes, quantize_input,
                        requantize, run_integer, unpack_codes)

__all__ = ["AddRequant", "ConcatRequant", "add_requant", "concat_requant", "AvgPool2d", "Conv2dGeneralRequant", "Conv2dRequant", "Conv2dRequantMaxpool", "DenseRequant", "DenseScores", "IntegerModel", "KernelStep",
           "LRNRequant", "MaxPool2d", "QuantizeInput", "fuse", "accumulator_bound", "build_integer_model", "check_lowerable",
           "OP_FUNCTIONS", "avgpool2d", "conv2d_general_requant", "conv2d_requant", "conv2d_requant_maxpool", "dense_requant", "dense_scores",
           "first_mismatch", "integer_scores", "lrn_requant", "maxpool2d", "pack_codes", "quantize_input",
           "requantize", "run_integer", "unpack_codes"]
