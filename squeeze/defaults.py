"""Defaults shared by the library and the command line, importable without torch (so that
``squeeze --help`` can show them without loading it)."""

# The stopping rule compress, train and intrinsic-dim share: a cap of 200 epochs, 6 epochs of
# patience, the rate halved after 2 epochs without a better validation loss. Measured when it was
# chosen (distilling the mnist5k MLP sample, one seed): the best epoch fell at 11 to 36 (d = 750
# and 3,000, lr 0.1 and 0.03), where a fixed 10 epochs had left d = 750 at 0.959 of the teacher's
# test accuracy instead of 0.974. samples/README.md lists the epochs of each compress candidate.
# Checked across the zoo and a user-file model (python benchmarks/stopping_rule.py, 2 seeds,
# validation objective at the kept epoch; MLP/mnist5k, LeNet/digits, ResNet+BatchNorm/digits,
# GRU/mnist1d): patience 10 stops later with the same result on all four; patience 3 leaves the
# GRU at 0.47 validation accuracy (0.85 with 6); a fixed 10 epochs leaves the GRU at chance; a
# fixed 40 epochs with one-cycle reaches a 1.6%, 6.0% and 2.7% lower objective on MLP, LeNet and
# GRU (21% higher on the ResNet), at 0.86-1.64x the CPU time: better there, but not adaptive.
CONVERGE = {"epochs": 200, "patience": 6, "decay_after": 2}
LEVELS = (4, 8, 16)  # the quantized encodings compress searches besides float16
MIN_OPSET = 18  # the lowest opset the torch.export-based exporter targets
DEFAULT_OPSET = 18
QUANTIZE = {"steps": 1000, "lr": 1e-2, "batch_size": 128, "distill_weight": 0.5}  # squeeze.quantize.QuantizeConfig
PROJECTIONS = ("dense", "sorf", "sparse")  # the registered projection kinds (a test checks the registry)

__all__ = ["CONVERGE", "LEVELS", "MIN_OPSET", "DEFAULT_OPSET", "QUANTIZE", "PROJECTIONS"]
