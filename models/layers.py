"""Building blocks of SDNet / SDNet-A (design §4.1) and their DCR reparameterization (design §2.3).

Convertible modules (``InitialBlock``, ``DiffBlock``) exist in two states: the multi-branch training form and the
converted (deploy) form. ``reparameterize()`` switches a module in place from the first to the second and is a
no-op on a converted module; ``equivalent_kernel_bias()`` is the pure (differentiable) conversion maths. A module
built with ``deploy=True`` has exactly the converted form's parameters, so converted weights load into it.
The training form computes its branches one by one (``train_form = 'separate'``, the authors' arithmetic and the
default of a new module) or, with ``'fused'``, as one convolution with the branches' mixed kernel, computed at every
call from the same parameters (`models.pdc.mixed_kernel`). A block whose per-branch BatchNorm uses batch statistics
is not linear in its input and computes branch by branch in both forms: one grouped convolution of all branches and
one BatchNorm call over them trained slower on the CPU than the branches one by one (BENCHMARKS.md, "Training").
``models.dcr.set_train_form`` sets the form for a whole model; parameters, their names and the state dicts are the
same in both.
Attribute names say what each part is (``branches``, ``merged``, ``pre_bias``, ...); the state dicts keep the
authors' keys (``scales``, ``conv1.{i}``, ``bn0``, ``bn1.{i}``, ``conv2``, ``shortcut``, ...) through the state-dict
hooks of `keep_release_keys`, so their checkpoints load without a key map and weight-decay groups go by key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pdc import PDC_OPS, mixed_conv, mixed_kernel

__all__ = ["bn_scale_shift", "uses_batch_statistics", "keep_release_keys", "PDCConv", "InitialBlock", "DiffBlock",
           "CSAM", "CDCM", "FuseConv", "MobileViTv2Block"]


def init_branch_logits(num_branches: int) -> torch.Tensor:
    """Initial branch logits alpha = [0, 1, 1, ...]: softmax gives 0.155/0.422/0.422 for 3 branches (design §2.3)."""
    return torch.tensor([0.0] + [1.0] * (num_branches - 1))


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale * x + shift, from its running statistics; both (C,).

    scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale. Differentiable, never mutates.
    """
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


def uses_batch_statistics(norms: Sequence[nn.Module] | None) -> bool:
    """Whether any of these per-branch BatchNorms normalises by the batch (training mode): then the branches are
    not linear in the input as a whole and cannot be folded into one kernel."""
    return norms is not None and any(norm.training for norm in norms)


def _renamed(state_dict: dict, prefix: str, names: dict[str, str]) -> None:
    """Rename, in place, the entries of ``state_dict`` under ``prefix`` whose first name is a key of ``names``. The
    renamed entries move to the end, in order: where they already are when a module's state-dict hook runs."""
    entries = [(key, state_dict.pop(key)) for key in [key for key in state_dict if key.startswith(prefix)]]
    for key, value in entries:
        head, dot, rest = key[len(prefix):].partition(".")
        state_dict[prefix + names.get(head, head) + dot + rest] = value


def _save_release_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    _renamed(state_dict, prefix, module.SAVED_AS)


def _load_release_keys(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    _renamed(state_dict, prefix, module.loaded_as())


def keep_release_keys(module: nn.Module) -> None:
    """Give ``module`` attribute names of its own while its state dict keeps the release's keys, so that the
    authors' checkpoints and ours load as they are: ``module.SAVED_AS`` maps an attribute to the key it is saved
    under, ``module.loaded_as()`` (asked at load time: it depends on the module's form) a key to the attribute it
    loads into. The hooks are module-level functions of the module they are given, so copies and pickles of it
    keep working."""
    module.register_state_dict_post_hook(_save_release_keys)
    module.register_load_state_dict_pre_hook(_load_release_keys)


def _check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    if not ops or any(op not in PDC_OPS for op in ops):
        raise ValueError(f"op list must be a non-empty list of {sorted(PDC_OPS)}, got {list(ops)}")
    return ops


class PDCConv(nn.Module):
    """One pixel difference convolution branch with a 3x3 weight, applied as PDC ``op`` (design §2.2).

    Holds only ``weight`` (C_out, C_in/groups, 3, 3), initialised like ``nn.Conv2d`` (kaiming_uniform, a=sqrt(5)).
    forward: (N, C_in, H, W) -> (N, C_out, H', W'), zero padding so that stride 1 keeps the size.
    """

    def __init__(self, op: str, in_channels: int, out_channels: int, *, groups: int = 1, stride: int = 1,
                 dilation: int = 1):
        super().__init__()
        if op not in PDC_OPS:
            raise ValueError(f"unknown PDC op {op!r}; choose from {sorted(PDC_OPS)}")
        self.op, self.groups, self.stride, self.dilation = op, groups, stride, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return PDC_OPS[self.op].conv(x, self.weight, None, self.stride, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"op={self.op}, weight={tuple(self.weight.shape)}, groups={self.groups}, stride={self.stride}"


class InitialBlock(nn.Module):
    """Full 3x3 conv C_in -> C_out with softmax-mixed PDC branches, no bias, BN or activation (design §4.1).

    Training form: ``scales`` (alpha, one logit per op) and ``conv.{i}.weight``; converted form: ``weight``
    (C_out, C_in, k, k), k = 5 if ``ops`` has ``rd`` else 3. forward: (N, C_in, H, W) -> (N, C_out, H, W);
    ``train_form`` 'fused' runs the training form as one conv with `equivalent_kernel`.
    """

    train_form = "separate"

    def __init__(self, in_channels: int, out_channels: int, ops: Sequence[str], *, deploy: bool = False):
        super().__init__()
        self.ops = _check_ops(ops)
        self.kernel_size = 5 if "rd" in self.ops else 3
        self.deploy = deploy
        if deploy:
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, self.kernel_size, self.kernel_size))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            self.scales = nn.Parameter(init_branch_logits(len(self.ops)))
            self.conv = nn.ModuleList(PDCConv(op, in_channels, out_channels) for op in self.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return F.conv2d(x, self.weight, None, 1, self.kernel_size // 2)
        weights = torch.softmax(self.scales, dim=0)
        if self.train_form == "fused":
            return mixed_conv(x, self.ops, [conv.weight for conv in self.conv], weights)
        return sum(weights[i] * conv(x) for i, conv in enumerate(self.conv))

    def equivalent_kernel(self) -> torch.Tensor:
        """The single vanilla kernel (C_out, C_in, k, k) equal to the mixed branches: sum_i s_i T_i(W_i)."""
        if self.deploy:
            return self.weight
        return mixed_kernel(self.ops, [conv.weight for conv in self.conv], torch.softmax(self.scales, dim=0),
                            self.kernel_size)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch in place to the converted form (one plain conv); no-op if already converted."""
        if self.deploy:
            return
        kernel = self.equivalent_kernel().detach().clone()
        del self.scales, self.conv
        self.weight = nn.Parameter(kernel)
        self.deploy = True


class DiffBlock(nn.Module):
    """Backbone block: [2x2 max-pool] -> depthwise multi-branch PDC -> ReLU -> 1x1 conv, plus shortcut (design §4.1).

    Training form: z = BN0(x); u = sum_i s_i BN1_i(PDC_i(z; W_i)) with s = softmax(``scales``) (BNs only if ``bn``),
    the PDC branches being ``branches``; y = conv2(ReLU(u)) + shortcut(x), x being the (pooled) input. Converted
    form: u = merged(x + ``pre_bias``) with ``merged`` one depthwise k x k conv with bias (k = 5 if ``ops`` has
    ``rd``) and ``pre_bias`` the (1, C_in, 1, 1) input pre-bias that carries BN0's shift exactly, borders included.
    The state dict keeps the release's keys: ``branches`` and ``merged`` are saved as ``conv1``, ``pre_bias`` as
    ``bias`` (`keep_release_keys`). The shortcut is a 1x1 conv with bias when
    ``stride`` > 1 or the channel count changes, else the identity. forward: (N, C_in, H, W) ->
    (N, C_out, H // stride, W // stride). ``train_form`` 'fused' computes u as one depthwise conv with the mixed
    kernel (BN1 at running statistics folded into it); while BN1 uses batch statistics, branch by branch.
    """

    train_form = "separate"
    SAVED_AS = {"branches": "conv1", "merged": "conv1", "pre_bias": "bias"}

    def loaded_as(self) -> dict[str, str]:
        return {"conv1": "merged" if self.deploy else "branches", "bias": "pre_bias"}

    def __init__(self, in_channels: int, out_channels: int, ops: Sequence[str], *, stride: int = 1,
                 bn: bool = False, deploy: bool = False):
        super().__init__()
        self.ops = _check_ops(ops)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.kernel_size = 5 if "rd" in self.ops else 3
        self.deploy = deploy
        # Registration order follows the authors' state dicts: scales, shortcut, bn0, conv1, bn1, conv2.
        keep_release_keys(self)
        if not deploy:
            self.scales = nn.Parameter(init_branch_logits(len(self.ops)))
        if stride > 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.shortcut = None
        if deploy:
            self.register_buffer("pre_bias", torch.zeros(1, in_channels, 1, 1))
            self.merged = self._converted_conv()
        else:
            self.bn0 = nn.BatchNorm2d(in_channels) if bn else None
            self.branches = nn.ModuleList(PDCConv(op, in_channels, in_channels, groups=in_channels)
                                          for op in self.ops)
            self.bn1 = nn.ModuleList(nn.BatchNorm2d(in_channels) for _ in self.ops) if bn else None
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1)

    def _converted_conv(self) -> nn.Conv2d:
        c, k = self.in_channels, self.kernel_size
        return nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, self.stride, self.stride)
        if self.deploy:
            u = self.merged(x if self.pre_bias is None else x + self.pre_bias)
        elif self.train_form == "fused" and not uses_batch_statistics(self.bn1):
            kernel, bias = self._branch_kernel_bias()
            u = F.conv2d(self.bn0(x) if self.bn0 is not None else x, kernel, bias if self.bn1 is not None else None,
                         1, self.kernel_size // 2, 1, self.in_channels)
        else:
            z = self.bn0(x) if self.bn0 is not None else x
            weights = torch.softmax(self.scales, dim=0)
            u = 0
            for i, conv in enumerate(self.branches):
                branch = conv(z)
                if self.bn1 is not None:
                    branch = self.bn1[i](branch)
                u = u + weights[i] * branch
        # In place: neither u (a fresh sum or conv output) nor conv2's output is needed by its own backward, so
        # the ReLU and the residual add need no tensor of their own (a pass allocates and fills less).
        y = self.conv2(F.relu(u, inplace=True))
        return y.add_(self.shortcut(x) if self.shortcut is not None else x)

    def _branch_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The branches after BN0 as one depthwise conv, BN1 at its running statistics: K = sum_i s_i (gamma_i /
        sigma_i) T_i(W_i) (C, 1, k, k) and b = sum_i s_i (beta_i - mu_i gamma_i / sigma_i) (C,) (zeros without
        BN)."""
        weights = torch.softmax(self.scales, dim=0)
        branch_weights = [conv.weight for conv in self.branches]
        if self.bn1 is None:
            return (mixed_kernel(self.ops, branch_weights, weights, self.kernel_size),
                    weights.new_zeros(self.in_channels))
        scales, shifts = zip(*(bn_scale_shift(norm) for norm in self.bn1))
        coefficients = weights[:, None] * torch.stack(scales)
        return (mixed_kernel(self.ops, branch_weights, coefficients, self.kernel_size),
                (weights[:, None] * torch.stack(shifts)).sum(0))

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """DCR of the training form (design §2.3): kernel K (C, 1, k, k), conv bias b (C,), pre-bias c (1, C, 1, 1).

        K = a0 * sum_i s_i (gamma_i / sigma_i) T_i(W_i), b = sum_i s_i (beta_i - mu_i gamma_i / sigma_i),
        c = sigma0 beta0 / gamma0 - mu0 with a0 = gamma0 / sigma0, from the BN running statistics (so the result
        does not depend on train/eval mode). Pure and differentiable; never mutates the block. On a converted
        block it returns the converted tensors.
        """
        if self.deploy:
            pre_bias = self.pre_bias if self.pre_bias is not None else \
                self.merged.weight.new_zeros(1, self.in_channels, 1, 1)
            return self.merged.weight, self.merged.bias, pre_bias
        kernel, bias = self._branch_kernel_bias()
        pre_bias = kernel.new_zeros(1, self.in_channels, 1, 1)
        if self.bn0 is not None:
            gamma0 = self.bn0.weight
            if gamma0 is not None and bool((gamma0 == 0).any()):
                raise ValueError("cannot reparameterize a DiffBlock whose bn0 has a zero weight (gamma0 = 0)")
            scale0, shift0 = bn_scale_shift(self.bn0)
            # BN0(x) = a0 * (x + c): the shift becomes an input pre-bias, exact under zero padding.
            kernel = kernel * scale0.view(-1, 1, 1, 1)
            pre_bias = (shift0 / scale0).view(1, -1, 1, 1)
        return kernel, bias, pre_bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch in place to the converted form (one depthwise conv + pre-bias); no-op if already converted."""
        if self.deploy:
            return
        kernel, bias, pre_bias = self.equivalent_kernel_bias()
        conv = self._converted_conv().to(device=kernel.device, dtype=kernel.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        del self.scales, self.bn0, self.branches, self.bn1
        self.merged = conv
        self.register_buffer("pre_bias", pre_bias.detach().clone())
        self.deploy = True

    @torch.no_grad()
    def skip_zero_pre_bias(self) -> bool:
        """For inference copies: drop a converted block's pre-bias when it is exactly zero (always so without BN),
        so that forward skips adding zeros to its input. Exact; the dropped buffer leaves the state dict, so save
        weights from the converted model, not from this copy. Returns True when the pre-bias was dropped."""
        if not self.deploy or self.pre_bias is None or bool(self.pre_bias.any()):
            return False
        self.pre_bias = None
        return True


class CSAM(nn.Module):
    """Compact spatial attention (design §4.1): x * sigmoid(conv2_{3x3, 4->1, no bias}(conv1_{1x1, C->4}(ReLU(x)))).

    forward: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)
        nn.init.zeros_(self.conv1.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class CDCM(nn.Module):
    """Image compact dilation module (design §4.1): ReLU -> 1x1 conv C_in -> C_out -> sum of dilated branches.

    Dilation 1 is the identity (the 1x1 output itself); dilation d > 1 is a 3x3 conv C_out -> C_out, dilation d,
    no bias, stored as ``conv_dils.{j}`` with j its position in ``dilations``. forward: (N, C_in, H, W) ->
    (N, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int]):
        super().__init__()
        self.dilations = tuple(dilations)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.zeros_(self.conv1.bias)
        self.conv_dils = nn.ModuleDict({
            str(j): nn.Conv2d(out_channels, out_channels, 3, padding=d, dilation=d, bias=False)
            for j, d in enumerate(self.dilations) if d > 1
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return sum(x if d == 1 else self.conv_dils[str(j)](x) for j, d in enumerate(self.dilations))


class FuseConv(nn.Module):
    """Linear 1x1 fusion conv with bias initialised to 0 (the decoder's ``conv_reduces``). (N, C_in, H, W) ->
    (N, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class LinearSelfAttention(nn.Module):
    """MobileViTv2 separable linear attention on (B, D, P, N) patch tensors.

    Q (1 channel), K, V (D each) come from one 1x1 conv; context = sum_N K * softmax_N(Q), taken separately for
    each in-patch position P; out = OutProj(ReLU(V) * context). Shape preserved.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Three convolutions with slices of the one projection, not one conv and a split of its 1 + 2D channels:
        # the same arithmetic per channel, and an exported graph without a Split on an odd channel count, which
        # OpenVINO ran with a reference kernel (18 % of SDNet-A's time; BENCHMARKS.md, "Backends").
        weight, bias = self.qkv_proj.weight, self.qkv_proj.bias
        query, key, value = (F.conv2d(x, weight[part], bias[part]) for part in
                             (slice(0, 1), slice(1, 1 + self.dim), slice(1 + self.dim, None)))
        context = (key * torch.softmax(query, dim=-1)).sum(dim=-1, keepdim=True)
        return self.out_proj(F.relu(value) * context)


class LinearTransformerBlock(nn.Module):
    """Pre-norm transformer block: x += Attn(GN(x)); x += SiLU(Conv1x1(GN(x))). GroupNorm has 1 group.

    (B, D, P, N) -> (B, D, P, N).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTv2Block(nn.Module):
    """Simplified MobileViTv2 block of SDNet-A (design §4.1), D = C // 2, no residual around the block.

    1x1 conv C -> D (no bias); unfold into p x p patches (pixel (h, w) -> in-patch index (h mod p) p + (w mod p),
    patch index (h // p)(W / p) + w // p); ``depth`` linear transformer blocks; GroupNorm; fold; 1x1 conv D -> C
    (no bias). forward: (B, C, H, W) -> (B, C, H', W'), where H', W' are H, W rounded up to multiples of p (the
    input is upsampled bilinearly, align_corners=True, when not divisible, and the output keeps that size).
    """

    def __init__(self, channels: int, *, depth: int = 2, patch_size: int = 2):
        super().__init__()
        dim = channels // 2
        self.patch_size = patch_size
        self.conv_pre = nn.Conv2d(channels, dim, 1, bias=False)
        self.transformer = nn.Sequential(*(LinearTransformerBlock(dim) for _ in range(depth)))
        self.norm = nn.GroupNorm(1, dim)
        self.conv_proj = nn.Conv2d(dim, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        height, width = x.shape[-2:]
        # Integer arithmetic on the sizes, which a trace records, and the resize kept in a trace whatever the size:
        # the exported graph (engine.inference.export) then serves inputs of every size.
        new_h, new_w = (height + p - 1) // p * p, (width + p - 1) // p * p
        if p > 1 and (torch.jit.is_tracing() or (new_h, new_w) != (height, width)):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        x = self.conv_pre(x)
        b, d = x.shape[:2]
        nh, nw = new_h // p, new_w // p
        x = x.reshape(b, d, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4).reshape(b, d, p * p, nh * nw)
        x = self.norm(self.transformer(x))
        x = x.reshape(b, d, p, p, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, d, new_h, new_w)
        return self.conv_proj(x)
