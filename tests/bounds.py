"""The float bounds of the suite, each derived from the arithmetic it bounds, never observed on one CPU.

Two computations of the same function that sum in another order (another CPU, another oneDNN ISA, another
backend, batch split or block form) differ by rounding. Unit roundoff: u = 2^-53 = 1.1e-16 in float64, 2^-24 =
6.0e-8 in float32, 2^-8 = 3.9e-3 in bf16, 2^-11 = 4.9e-4 in fp16 (a rounding's error is at most u of the value,
u / sqrt(3) on average over values). A sum of n terms is within n u of the sum of
their magnitudes in the worst case; kernels sum in blocks and trees, never one chain of n, and rounding errors of
random sign grow as sqrt(n) u, which is the model below. Over the D layers of a network the per-layer errors add
in the same way: sqrt(D) times one layer's. SDNet has D of about 40 convolutions on its longest path; a
convolution of C input channels sums K = 9 C <= 9 x 256 products per output (n for a weight gradient: the pixels
of the batch). Every bound keeps a margin of at least 3 over its estimate, while the errors the tests exist for (a
wrong tap, border, stride or branch, a lost micro-batch, a loss not divided) move values by their own size.

`tests/conftest.py` and ``make test-isa`` run the numerics-sensitive tests with PyTorch's oneDNN held to AVX2 and
SSE4.1 as well, so that each bound is met under three summation orders on every machine that runs the suite.
"""

# Float64, one function computed two ways (a DCR-converted model and its training form, fused and separate blocks,
# PDC ops as vanilla kernels, a clip split into parts): per layer sqrt(K) u = 5e-15 of the magnitudes summed,
# sqrt(D) = 6.3 layers: 3e-14; the magnitudes (random weights and inputs of order 1) reach 10 at most: 3e-13.
# 1e-10 keeps a factor of 300; tests compare relative to the largest value where magnitudes grow.
FLOAT64 = 1e-10
# One float64 layer (a conversion of one block, one STDC, one sync-BN): sqrt(K) u x 10 = 5e-14; 1e-12 keeps 20.
FLOAT64_LAYER = 1e-12

# Maps (sigmoid outputs in [0, 1]) of one float32 network computed by two kernels (eager NCHW, channels_last,
# OpenVINO, ONNX Runtime, inductor, CUDA; a converted model against its training form or the authors' outputs):
# per layer sqrt(K) u = 2.9e-6 of the magnitudes summed, sqrt(D) layers: 1.8e-5 of the logits' scale; the logits
# of these networks stay below 4 in size, and the sigmoid's slope is at most 1/4: 1.8e-5 in the map. DCR adds one
# rounding per merged weight (u, below a layer's own). 1e-4 keeps a factor of 5.
MAP_FLOAT32 = 1e-4

# A map quantised to 8 bits (floor(255 p)) by two computations within MAP_FLOAT32: a level can differ by one
# only where 255 p lies within 255 x MAP_FLOAT32 of an integer.
QUANTISATION_BOUNDARY = 255 * MAP_FLOAT32

# Maps of a bf16 autocast forward against float32 (training's autocast; OpenVINO's bf16 inference): products
# accumulate in float32, each layer's input and weights are rounded to bf16 (2 roundings of u = 2^-8, u / sqrt(3) =
# 2.3e-3 each on average: 3.2e-3 a layer), sqrt(D) layers: 2.0e-2 of the logits' scale (below 4) times the
# sigmoid's slope (1/4): 2.0e-2. 0.05 keeps a factor of 2.5 on this worst logit scale; no bf16 kernel error (NaN, a
# wrong tap) stays below it.
MAP_BF16 = 0.05

# fp16 on CUDA against float32: the same count with u = 2^-11: 5e-3; 1e-2 keeps a factor of 2 on the worst logit
# scale of 4 (and 8 on logits below 1).
MAP_FP16 = 1e-2

# Gradients of one float32 step whose batch is split otherwise (8 images at once; 4 + 4 accumulated by --iter-size
# or all-reduced by DDP, with or without synchronised BN) or whose blocks run in another form: a weight gradient
# sums n = 8 x 64 x 64 products per layer, sqrt(n) u = 1.1e-5, over sqrt(D) layers: 7e-5 of the magnitudes
# involved. Those are the upstream gradients and activations that make the model's largest gradient, not the
# tensor's own largest entry, which cancellation can make far smaller (a block's branch logits sum over all its
# outputs; batch-statistics BN subtracts means). 1e-3 of the model's largest gradient keeps a factor of 14.
GRADIENT_FLOAT32 = 1e-3
# In float64, a tensor compared relative to its own largest entry, at least this share of the model's largest (for
# a tensor whose exact gradient is 0 everywhere, which holds rounding noise only).
GRADIENT_FLOOR = 1e-3

# The loss of one step, logged by two runs that split its batch differently: a mean of nonnegative terms (BCE per
# pixel), whose relative rounding is that of its sums, not amplified by cancellation. PyTorch sums a tensor in
# blocks and pairs: about log2(N) u = 1e-6 for N = 8 x 64 x 64 x 5 side outputs, plus one rounding for each
# micro-batch loss added. 1e-5 keeps a factor of 10; splitting the batch wrongly moves the loss by percents.
LOSS_FLOAT32 = 1e-5


# A value printed with d decimals (the paper's tables, a log) is the exact value within half a unit of its last
# digit; float32 arithmetic adds at most 1e-6 to values below 1.
def printed(decimals: int) -> float:
    """The bound of a value below 1 compared with its printed form of ``decimals`` decimals."""
    return 0.5 * 10.0**-decimals + 1e-6
