"""STDC equals its difference formulas on each (t, s) plane and its converted 3x3 conv (float64, first and last frames
included), computed frame by frame on clips as STDM runs it."""

import bounds
import pytest
import torch
import torch.nn.functional as F

from models.stdc import STDC, STDM

# Offsets (dt, ds) of the 3x3 taps k = 3u + v: rows index time, columns the spatial axis.
OFFSETS = [(u - 1, v - 1) for u in range(3) for v in range(3)]
CLOCKWISE_NEXT = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0}


def _randomise(module, generator):
    """Random weights, BN statistics/affines and branch logits, so that no folding term is trivially 0 or 1."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator, dtype=m.running_mean.dtype))
                m.running_var.copy_(torch.rand(m.num_features, generator=generator, dtype=m.running_var.dtype) + 0.5)
    return module.eval()


def _pad_plane(x):
    """(N', C, T, S) -> (N', C, T+2, S+2): one frame replicated at both temporal ends, zeros along space (§3)."""
    return F.pad(F.pad(x, (0, 0, 1, 1), mode="replicate"), (1, 1, 0, 0))


def _taps(x):
    """x(t + dt, s + ds) for the nine offsets, frames replicated at both temporal ends, zeros along space."""
    t, s = x.shape[-2:]
    xp = _pad_plane(x)
    return [xp[..., 1 + dt: 1 + dt + t, 1 + ds: 1 + ds + s] for dt, ds in OFFSETS]


def _branch_definition(op, x, weight):
    """Dense PDC on the (t, s) plane straight from its difference formula. x: (N, C, T, S), weight: (C, C, 3, 3)."""
    taps = _taps(x)
    w = weight.flatten(2)  # (C_out, C_in, 9)
    if op == "cv":
        terms = [(k, taps[k]) for k in range(9)]
    elif op == "cd":
        terms = [(k, taps[k] - x) for k in range(9)]
    else:
        terms = [(j, taps[j] - taps[CLOCKWISE_NEXT[j]]) for j in CLOCKWISE_NEXT]
    return sum(torch.einsum("oi,nits->nots", w[:, :, k], term) for k, term in terms)


def _stdc_definition(layer, x):
    """Training-form STDC output in eval mode, from the formulas (independent of the layer's own forward)."""
    weights = torch.softmax(layer.scales, dim=0)
    out = 0
    for i, op in enumerate(layer.tid):
        y = _branch_definition(op, x, layer.branches[i].weight)
        if layer.norms is not None:
            norm = layer.norms[i]
            shape = (1, -1, 1, 1)
            y = (y - norm.running_mean.view(shape)) / torch.sqrt(norm.running_var.view(shape) + norm.eps)
            y = y * norm.weight.view(shape) + norm.bias.view(shape)
        out = out + weights[i] * y
    return out


def _planes_to_frames(planes, clips, axis):
    """(clips*R, C, T, S) planes, R per clip -> (clips*T, C, H, W) frames whose axis ``axis`` (3: W, 2: H) is S."""
    n, c, t, s = planes.shape
    frames = planes.reshape(clips, n // clips, c, t, s).permute(0, 3, 2, 1, 4)  # (clips, T, C, R, S)
    frames = frames.reshape(clips * t, c, n // clips, s)
    return frames if axis == 3 else frames.transpose(2, 3)


def _frames_to_planes(frames, clips, axis):
    """Inverse of `_planes_to_frames`."""
    frames = frames if axis == 3 else frames.transpose(2, 3)
    bt, c, r, s = frames.shape
    planes = frames.reshape(clips, bt // clips, c, r, s).permute(0, 3, 2, 1, 4)  # (clips, R, C, T, S)
    return planes.reshape(clips * r, c, bt // clips, s)


@pytest.mark.parametrize("nframes,axis", [(1, 3), (2, 2), (8, 3), (8, 2)])
@pytest.mark.parametrize("tid,bn", [(("cv", "cd", "ad"), True), (("cd", "ad"), False), (("ad",), True)])
def test_stdc_matches_definition_and_converted_conv(nframes, axis, tid, bn):
    g = torch.Generator().manual_seed(nframes)
    layer = STDC(6, tid, [0.0] * len(tid), bn=bn).double()
    _randomise(layer, g)
    clips = 2
    x = torch.randn(clips * 3, 6, nframes, 9, generator=g, dtype=torch.float64)  # 3 planes per clip
    frames = _planes_to_frames(x, clips, axis)
    with torch.no_grad():
        training = _frames_to_planes(layer(frames, nframes, axis), clips, axis)
        definition = _stdc_definition(layer, x)
        layer.reparameterize()
        converted = _frames_to_planes(layer(frames, nframes, axis), clips, axis)
    assert training.shape == x.shape
    assert (training - definition).abs().max().item() < bounds.FLOAT64
    assert (converted - training).abs().max().item() < bounds.FLOAT64
    for frame in (0, nframes - 1):
        assert (converted[:, :, frame] - training[:, :, frame]).abs().max().item() < bounds.FLOAT64


def test_stdc_converted_form_and_keys():
    layer = STDC(4)
    assert sorted(layer.state_dict()) == sorted(
        ["scales"]
        + [f"convs.{i}.weight" for i in range(3)]
        + [f"norms.{i}.{k}" for i in range(3) for k in ("weight", "bias", "running_mean", "running_var",
                                                         "num_batches_tracked")]
    )
    assert torch.allclose(torch.softmax(layer.scales, 0), torch.tensor([0.1554, 0.4223, 0.4223]),
                          atol=bounds.printed(4))
    layer.reparameterize()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    assert sorted(state) == ["convs.bias", "convs.weight"]
    layer.reparameterize()  # converting twice changes nothing
    assert all(torch.equal(state[k], v) for k, v in layer.state_dict().items())
    assert layer.deploy and not STDC(4).deploy
    deploy = STDC(4, deploy=True)
    deploy.load_state_dict(state)
    assert deploy.deploy and torch.equal(deploy.conv.bias, state["convs.bias"])
    assert torch.equal(STDC(4, ("cv",), bn=False).conv.bias, torch.zeros(4))


def test_stdc_refuses_rd_bad_scales_a_bad_axis_and_partial_clips():
    with pytest.raises(ValueError, match="rd"):
        STDC(4, ("cv", "rd"), (0, 1))
    with pytest.raises(ValueError, match="scale"):
        STDC(4, ("cv", "cd"), (0, 1, 1))
    with pytest.raises(ValueError, match="axis"):
        STDC(4)(torch.zeros(2, 4, 3, 3), 2, axis=1)
    with pytest.raises(ValueError, match="whole clips"):
        STDC(4)(torch.zeros(3, 4, 3, 3), 2, axis=3)


def _plane_conv(stdc, plane):
    """The STDC as one 3x3 conv (its equivalent kernel and bias) on (N', C, T, S) planes, padded as design §3 says."""
    kernel, bias = stdc.equivalent_kernel_bias()
    return F.conv2d(_pad_plane(plane), kernel, bias)


def test_stdm_planes_and_conversion():
    """tdc1 runs on each row's T-W plane, tdc2 on each column's T-H plane (oracle built frame by frame)."""
    g = torch.Generator().manual_seed(0)
    b, t, c, h, w = 2, 3, 4, 5, 6
    module = _randomise(STDM(c, 3).double(), g)
    x = torch.randn(b * t, c, h, w, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = module(x, t)
        clips = x.view(b, t, c, h, w)
        rows = torch.stack([_plane_conv(module.tdc1, clips[:, :, :, r].transpose(1, 2)) for r in range(h)],
                           dim=3)  # B,C,T,H,W
        y = clips.transpose(1, 2) + F.relu(rows)
        cols = torch.stack([_plane_conv(module.tdc2, y[..., col]) for col in range(w)], dim=-1)
        y = y + F.relu(cols)
        expected = module.project2(y.transpose(1, 2).reshape(b * t, c, h, w))
        for stdc in (module.tdc1, module.tdc2):
            stdc.reparameterize()
        converted = module(x, t)
    assert out.shape == (b * t, 3, h, w)
    assert (out - expected).abs().max().item() < bounds.FLOAT64_LAYER
    assert (converted - out).abs().max().item() < bounds.FLOAT64
