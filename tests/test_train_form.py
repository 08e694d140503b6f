"""The fused training form (``--train-form fused``, the default) is the separate one's function: outputs, the
gradients of every parameter and the BatchNorm statistics agree in float64 for every block kind and model, and the
step settings (precision, layout, threads) are chosen and refused as docs/training.md says.

Float64 comparisons are relative to the largest value of the tensor compared, at `bounds.FLOAT64`: the two forms
sum the same terms in another order, so they differ by float64 rounding, while any error in the kernel arithmetic (a
wrong tap, border, stride or BN term) moves values by their own size. Gradients that
are exactly 0 in theory are rounding noise in the separate form and 0 (or other noise) in the fused one: a cd
branch's centre tap is covered by the bound relative to its tensor's largest entry; a tensor that is all noise (a
bias before a batch-statistics BN) is compared against 1e-3 of the model's largest gradient.
"""

from __future__ import annotations

import copy

import bounds
import pytest
import torch
import torch.nn.functional as F

from engine.training import step as train_step
from engine.training.loop import LoopConfig, TrainingStopped, train_one_pass
from engine.training.startup import choose_threads
from models import build_model, set_train_form
from models.layers import DiffBlock, InitialBlock
from models.pdc import PDC_OPS, mixed_conv
from models.stdc import STDC

RELATIVE = bounds.FLOAT64


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, floor: float = 0.0) -> None:
    """|actual - expected| <= RELATIVE x max(largest |expected|, ``floor``)."""
    scale = max(expected.abs().max().item(), floor)
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= RELATIVE * max(scale, 1e-300), f"{what}: {error:.3g} against {scale:.3g}"


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random branch logits and BN parameters / statistics, so that no term is trivially 0 or 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "scales" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
        for norm in module.modules():
            if isinstance(norm, torch.nn.BatchNorm2d):
                for tensor in (norm.weight, norm.bias, norm.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
                norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator,
                                                  dtype=norm.running_var.dtype) + 0.5)
    return module


def compare_forms(module: torch.nn.Module, inputs: tuple, training: bool, call=None) -> None:
    """Run ``module`` separate and fused (deep copies) on ``inputs`` (float64), backward with a fixed random
    output weighting; outputs, every parameter's gradient, the input gradients and every buffer agree."""
    call = call or (lambda m, *xs: m(*xs))
    results = []
    for form in ("separate", "fused"):
        copy_ = set_train_form(copy.deepcopy(module), form).train(training)
        xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
        out = call(copy_, *xs)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
        (out * weight).sum().backward()
        results.append((out, {n: p.grad for n, p in copy_.named_parameters()}, [x.grad for x in xs],
                        dict(copy_.named_buffers())))
    (out_s, grads_s, input_grads_s, buffers_s), (out_f, grads_f, input_grads_f, buffers_f) = results
    assert_close(out_f, out_s, "output")
    assert grads_s.keys() == grads_f.keys()
    # A tensor whose exact gradient is 0 everywhere (a bias before a batch-statistics BN) holds only rounding noise
    # in both forms: gradients are compared against at least 1e-3 of the model's largest.
    floor = bounds.GRADIENT_FLOOR * max(grad.abs().max().item() for grad in grads_s.values() if grad is not None)
    for name, grad in grads_s.items():
        assert (grad is None) == (grads_f[name] is None), name
        if grad is not None:
            assert_close(grads_f[name], grad, f"gradient of {name}", floor)
    for grad_s, grad_f in zip(input_grads_s, input_grads_f, strict=True):
        if grad_s is not None:
            assert_close(grad_f, grad_s, "input gradient")
    for name, buffer in buffers_s.items():
        assert_close(buffers_f[name], buffer, f"buffer {name}")


OP_SETS = [("cv", "cd", "ad"), ("cv", "cd", "ad", "rd"), ("rd", "cd")]


@pytest.mark.parametrize("ops", OP_SETS)
@pytest.mark.parametrize(("stride", "dilation", "depthwise"), [(1, 1, False), (2, 1, True), (1, 2, False),
                                                                (2, 2, True)])
def test_mixed_conv_is_the_sum_of_the_branches(ops, stride, dilation, depthwise):
    """One convolution with the mixed kernel equals the mixed PDC branches, borders (7 x 9 inputs), strides,
    dilations and groups included, and so do the gradients of input, branch weights and coefficients."""
    generator = torch.Generator().manual_seed(len(ops) + stride + 3 * dilation)
    channels, out_channels = 4, (4 if depthwise else 5)
    groups = channels if depthwise else 1
    x = torch.randn(2, channels, 7, 9, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(out_channels, channels // groups, 3, 3, generator=generator, dtype=torch.float64,
                           requires_grad=True) for _ in ops]
    coefficients = torch.randn(len(ops), generator=generator, dtype=torch.float64, requires_grad=True)
    separate = sum(coefficients[i] * PDC_OPS[op].conv(x, weights[i], None, stride, dilation, groups)
                   for i, op in enumerate(ops))
    fused = mixed_conv(x, ops, weights, coefficients, stride=stride, dilation=dilation, groups=groups)
    assert fused.shape == separate.shape
    assert_close(fused, separate, "output")
    grad_output = torch.randn(separate.shape, generator=generator, dtype=torch.float64)
    expected = torch.autograd.grad(separate, [x, coefficients, *weights], grad_output)
    actual = torch.autograd.grad(fused, [x, coefficients, *weights], grad_output)
    for name, got, want in zip(["input", "coefficients", *ops], actual, expected, strict=True):
        assert_close(got, want, name)


@pytest.mark.parametrize("ops", OP_SETS)
def test_initial_block(ops):
    block = randomise(InitialBlock(3, 6, ops).double(), 1)
    compare_forms(block, (torch.randn(2, 3, 9, 11, dtype=torch.float64),), training=True)


@pytest.mark.parametrize("ops", OP_SETS[:2])
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("stride", "in_channels", "out_channels"), [(1, 4, 4), (2, 4, 6)])
def test_diff_block(ops, bn, training, stride, in_channels, out_channels):
    """Without BN: one depthwise conv; BN at running statistics (eval): folded into it; BN with batch statistics
    (training): branch by branch in both forms (the same code: a check that the form switch leaves it so)."""
    block = randomise(DiffBlock(in_channels, out_channels, ops, stride=stride, bn=bn).double(), 2)
    compare_forms(block, (torch.randn(3, in_channels, 10, 7, dtype=torch.float64),), training)


@pytest.mark.parametrize(("tid", "bn"), [(("cv", "cd", "ad"), True), (("cv", "cd", "ad"), False),
                                         (("cd",), True), (("ad", "cv"), False)])
@pytest.mark.parametrize("axis", [2, 3])
@pytest.mark.parametrize("training", [True, False])
def test_stdc(tid, bn, axis, training):
    layer = randomise(STDC(4, tid, scales=[0.3 * i for i in range(len(tid))], bn=bn).double(), 3)
    compare_forms(layer, (torch.randn(6, 4, 5, 7, dtype=torch.float64),), training,
                  call=lambda module, x: module(x, 3, axis))


@pytest.mark.parametrize("name", ["sdnet", "sdneta", "stdnet", "stdneta"])
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_every_model(name, bn, training):
    torch.manual_seed(0)
    model = randomise(build_model(name, bn=bn, nframes=2).double(), 5)
    video = name.startswith("std")
    x = torch.randn(1 if video else 2, 6 if video else 3, 32, 32, dtype=torch.float64)
    compare_forms(model, (x,), training)


def test_the_form_changes_no_parameter_name_or_value():
    model = build_model("stdneta", bn=True)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    set_train_form(model, "fused")
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], value) for key, value in before.items())
    with pytest.raises(ValueError, match="unknown train form 'fast'"):
        set_train_form(model, "fast")


def test_a_non_finite_loss_stops_the_pass():
    model = build_model("sdnet")
    loader = [(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))]
    with pytest.raises(TrainingStopped, match=r"the loss is nan at batch 1 \(fp32, fused form, channels_last\)"):
        train_one_pass(model, loader, torch.optim.Adam(model.parameters()), lambda p, t: p.sum() * float("nan"),
                       LoopConfig(torch.device("cpu"), step=train_step.StepSettings()))


def test_non_finite_maps_stop_the_pass_before_the_loss():
    """NaN weights (what wrong bf16 kernels left on AMD Zen 4) give NaN maps: one line, as a NaN loss, where BCE
    would have stopped with a traceback ('all elements of input should be between 0 and 1')."""
    model = build_model("sdnet")
    with torch.no_grad():
        model.init_block.conv[0].weight.fill_(float("nan"))
    loader = [(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))]
    called = []
    with pytest.raises(TrainingStopped, match=r"the maps are not finite at batch 1 \(fp32, separate form, NCHW\)"):
        train_one_pass(model, loader, torch.optim.Adam(model.parameters()), lambda p, t: called.append(1),
                       LoopConfig(torch.device("cpu"), step=train_step.StepSettings("separate", "fp32", False)))
    assert not called


def test_step_settings_are_resolved_against_the_device(monkeypatch):
    cpu = torch.device("cpu")
    resolve = train_step.resolve_step_settings
    assert resolve(cpu) == train_step.StepSettings("fused", "fp32", True, False)
    assert resolve(cpu, train_form="separate", channels_last=False) == train_step.StepSettings("separate", "fp32",
                                                                                               False, False)
    with pytest.raises(train_step.StepError, match="^--precision fp16 trains on CUDA only"):
        resolve(cpu, precision="fp16")
    monkeypatch.setattr(train_step, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(train_step.StepError, match=r"^--precision bf16 needs a CPU with native bf16"):
        resolve(cpu, precision="bf16")
    monkeypatch.setattr(train_step, "cpu_has_native_bf16", lambda: True)
    assert resolve(cpu, precision="bf16").precision == "bf16"
    with pytest.raises(train_step.StepError, match="^--train-form fast: choose from fused, separate"):
        resolve(cpu, train_form="fast")


@pytest.mark.skipif(not train_step.cpu_has_native_bf16(), reason="this CPU has no native bf16")
@pytest.mark.parametrize("size", [128, 320])
def test_bf16_fused_channels_last_stays_finite_and_near_fp32(size):
    """The fused form in channels_last under bf16 autocast, the combination an earlier probe saw give NaN at 128 px
    (on an AMD EPYC: a oneDNN kernel of CPUs without AMX, which training now checks at start-up), finite, and
    within bf16's rounding of fp32."""
    torch.manual_seed(0)
    model = build_model("sdnet").train()
    settings = train_step.StepSettings("fused", "bf16", True)
    train_step.prepare_model(model, settings)
    x = train_step.to_step_input(torch.rand(2, 3, size, size), settings, torch.device("cpu"))
    with torch.no_grad():
        reference = model(x)
        with train_step.step_autocast(settings, torch.device("cpu")):
            low = model(x).float()
    assert torch.isfinite(low).all()
    assert (low - reference).abs().max().item() < bounds.MAP_BF16


def test_threads_are_shared_among_the_processes_of_a_machine(monkeypatch):
    from engine.training.settings import TrainSettings

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    settings = TrainSettings(model="sdnet", config="sdnet", bn=False, datadir=".", savedir=".", size=64,
                             workers=2, epochs=1, batch_size=4, lr=1e-3, wd=0.0, lr_type="multistep", lr_steps=(),
                             seed=0, amp=False, iter_size=1, max_steps=0, print_freq=0, preload=None,
                             finetune=None, resume=False, resume_from=None, save_freq=0, evaluate=None,
                             checkinfo=False, gpu="", sync_bn=False, threads=None)
    assert choose_threads(settings, {}) == (8, "8 usable cores / 1 process(es) on this machine")
    assert choose_threads(settings, {"LOCAL_WORLD_SIZE": "2"})[0] == 4  # torchrun: two processes on this machine
    assert choose_threads(settings, {"SLURM_PROCID": "1", "SLURM_NTASKS": "4"})[0] == 2  # srun: four tasks
    assert choose_threads(settings, {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}) == (1, "OMP_NUM_THREADS")
    assert choose_threads(settings.replace(threads=3), {"OMP_NUM_THREADS": "1"}) == (3, "--threads")


def test_fused_and_separate_training_steps_reach_the_same_weights():
    """Three Adam steps of SDNet from the same initialisation, fused and separate, in float64.

    Adam moves a weight by lr * m / (sqrt(v) + eps), whose change with the gradient is at most lr / eps per unit of
    gradient (eps = 1e-8): an entry whose exact gradient is 0 (a cd branch's centre tap) turns its rounding noise
    into a move of noise / eps times lr. In float32 that noise (1e-9) moves it by anything up to lr, depending on
    how the CPU summed, so the comparison is made in float64: the two forms' gradients differ by float64 rounding,
    at most about N u = 1e-11 (N = 2 x 48 x 48 products per entry, u = 1.1e-16, magnitudes below 1), which moves a
    weight by at most lr x 1e-11 / eps = 1e-3 lr per step; 1e-2 lr per step keeps a factor of 10. The converted
    models (the taps cancel there) agree within the same bound."""
    from models import convert_model

    lr, steps = 1e-3, 3
    generator = torch.Generator().manual_seed(11)
    batches = [(torch.rand(2, 3, 48, 48, generator=generator, dtype=torch.float64),
                (torch.rand(2, 1, 48, 48, generator=generator, dtype=torch.float64) > 0.6).double())
               for _ in range(steps)]
    states = []
    for form in ("separate", "fused"):
        torch.manual_seed(3)
        model = set_train_form(build_model("sdnet").double(), form)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for inputs, target in batches:
            loss = F.binary_cross_entropy(model(inputs), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        states.append((model.state_dict(), convert_model(model).state_dict()))
    (separate, separate_converted), (fused, fused_converted) = states
    for key, value in separate.items():
        assert (fused[key] - value).abs().max().item() <= 1e-2 * lr * steps, key
    for key, value in separate_converted.items():
        assert (fused_converted[key] - value).abs().max().item() <= 1e-2 * lr * steps, key
