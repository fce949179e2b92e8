"""fastxent.torch against torch.nn.functional: values, gradients (input and targets), every
option, float32/float64, gradcheck, opcheck, half precision, devices, torch.compile."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

if os.environ.get("FASTXENT_REQUIRE_BACKENDS"):
    import torch  # CI installs the test extra: a missing torch fails there, never skips
else:
    torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastxent  # noqa: E402
import fastxent.torch as fxt  # noqa: E402

TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(autouse=True)
def _quiet():
    # random logits and soft targets trip fastxent's value diagnostics; not under test here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastxent.InputWarning)
        yield


def _close(a, b, dtype):
    torch.testing.assert_close(a, b, **TOL[dtype])


def test_import_fastxent_imports_no_framework():
    code = ("import sys, fastxent; bad = [m for m in ('torch', 'jax', 'optax') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ cross_entropy

SHAPES = [(7, 5), (3, 4, 2, 3), (5,)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_pytorch(dtype, shape, prob, reduction):
    g = torch.Generator().manual_seed(hash((shape, prob, reduction)) % 2**31)
    C = shape[1] if len(shape) > 1 else shape[0]
    for weighted in (False, True):
        for eps in (0.0, 0.3):
            for ignore_index in (-100, 1):
                x = (3 * torch.randn(shape, generator=g, dtype=dtype)).requires_grad_()
                if prob:
                    y = torch.rand(shape, generator=g, dtype=dtype)
                    y = (y / y.sum(dim=1 if len(shape) > 1 else 0, keepdim=True))
                    y.requires_grad_()
                else:
                    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
                    y = torch.randint(0, C, tshape, generator=g)
                    if y.dim():
                        y[0] = -100  # one ignored target (ignore_index=-100 only)
                w = (torch.rand(C, generator=g, dtype=dtype) + 0.2) if weighted else None
                kw = dict(weight=w, reduction=reduction, label_smoothing=eps,
                          ignore_index=ignore_index)
                if (prob or y.dim() == 0) and ignore_index == 1:
                    continue
                if not prob and ignore_index == 1 and (y == -100).any():
                    y = y.clamp(min=0)
                ts = (x, y) if prob else (x,)
                ours = fxt.cross_entropy(x, y, **kw)
                ref = F.cross_entropy(x, y, **kw)
                up = torch.randn_like(ref) if ref.dim() else torch.tensor(1.7, dtype=dtype)
                g_ours = torch.autograd.grad(ours, ts, up)
                g_ref = torch.autograd.grad(ref, ts, up)
                assert ours.dtype == dtype and ours.shape == ref.shape
                _close(ours, ref, dtype)
                for a, b in zip(g_ours, g_ref):
                    _close(a, b, dtype)


@pytest.mark.filterwarnings("ignore:size_average and reduce args:UserWarning")
def test_cross_entropy_signed_weights_and_defaults():
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, -100, 0, 1, 2, 3])
    w = torch.tensor([1.5, -0.5, 2.0, 0.25], dtype=torch.float64)
    for eps in (0.0, 0.1):
        a = fxt.cross_entropy(x, t, w, label_smoothing=eps)
        b = F.cross_entropy(x, t, w, label_smoothing=eps)
        _close(a, b, torch.float64)
        _close(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0], torch.float64)
    # legacy size_average / reduce
    _close(fxt.cross_entropy(x, t, reduce=False), F.cross_entropy(x, t, reduce=False),
           torch.float64)
    _close(fxt.cross_entropy(x, t, size_average=False),
           F.cross_entropy(x, t, size_average=False), torch.float64)


def test_cross_entropy_mean_over_nothing_is_zero():
    # deliberate difference: PyTorch gives NaN (0 / 0)
    x = torch.randn(3, 4, requires_grad=True)
    loss = fxt.cross_entropy(x, torch.full((3,), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert not x.grad.any()
    assert F.cross_entropy(x, torch.full((3,), -100)).isnan()


def test_cross_entropy_no_grad_and_noncontiguous():
    x = torch.randn(6, 8, dtype=torch.float64)
    xt = x.t()  # (8, 6): non-contiguous, class dim 1
    t = torch.randint(0, 6, (8,))
    with torch.no_grad():
        _close(fxt.cross_entropy(xt, t), F.cross_entropy(xt, t), torch.float64)
    xt = xt.detach().requires_grad_()
    a = fxt.cross_entropy(xt, t, reduction="sum")
    ga, = torch.autograd.grad(a, xt)
    gb, = torch.autograd.grad(F.cross_entropy(xt, t, reduction="sum"), xt)
    _close(ga, gb, torch.float64)


def test_repeated_backward():
    # the gradient is handed over to a leaf's first backward and recomputed for the next
    torch.manual_seed(1)
    x = torch.randn(4, 3, requires_grad=True)
    h = torch.randn(4, 3, requires_grad=True)
    t = torch.tensor([0, 1, 2, 0])
    W = torch.randn(5, 3, requires_grad=True)
    for make, ref in ((lambda: fxt.cross_entropy(x, t), lambda: F.cross_entropy(x, t)),
                      (lambda: fxt.cross_entropy(h * 2, t), lambda: F.cross_entropy(h * 2, t)),
                      (lambda: fxt.binary_cross_entropy_with_logits(x, x.detach().sigmoid()),
                       lambda: F.binary_cross_entropy_with_logits(x, x.detach().sigmoid())),
                      (lambda: fxt.linear_cross_entropy(x, W, t),
                       lambda: _ref_lce(x, W, t))):
        loss = make()
        first = torch.autograd.grad(loss, (x, h, W), retain_graph=True, allow_unused=True)
        second = torch.autograd.grad(loss, (x, h, W), allow_unused=True)
        expect = torch.autograd.grad(ref(), (x, h, W), allow_unused=True)
        for a, b, c in zip(first, second, expect):
            if c is not None:
                _close(a, c, torch.float32)
                _close(b, c, torch.float32)


def test_cross_entropy_zero_copy():
    x = torch.randn(4, 6)
    t = torch.randint(0, 6, (4,))
    obj = fxt._softmax_loss(False, -100, 0.0, "mean")
    seen = {}
    real = type(obj).loss_gradient

    def spy(self, labels, logits, *a, **k):
        seen["logits"], seen["labels"] = logits, labels
        seen["out"] = real(self, labels, logits, *a, **k)
        return seen["out"]

    type(obj).loss_gradient = spy
    try:
        _, grad = fxt._ce_impl(x, t, None, -100, "mean", 0.0, True)
    finally:
        type(obj).loss_gradient = real
    assert np.shares_memory(seen["logits"], x.numpy())
    assert np.shares_memory(seen["labels"], t.numpy())
    assert grad.data_ptr() == seen["out"][1].ctypes.data  # the kernel's buffer, not a copy


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_in_float32(dtype):
    x = torch.randn(16, 10).to(dtype).requires_grad_()
    t = torch.randint(0, 10, (16,))
    loss = fxt.cross_entropy(x, t)
    assert loss.dtype == dtype
    ref = F.cross_entropy(x.detach().float(), t)
    torch.testing.assert_close(loss.float(), ref, rtol=1e-2, atol=1e-2)
    loss.backward()
    assert x.grad.dtype == dtype
    xb = torch.randn(5, 3).to(dtype).requires_grad_()
    yb = torch.rand(5, 3).to(dtype)
    out = fxt.binary_cross_entropy_with_logits(xb, yb)
    assert out.dtype == dtype
    torch.testing.assert_close(
        out.float(), F.binary_cross_entropy_with_logits(xb.detach().float(), yb.float()),
        rtol=1e-2, atol=1e-2)


def test_errors():
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"target\[2\] = 7 is not a class index"):
        fxt.cross_entropy(x, torch.tensor([0, 1, 7, 2, -100]))
    with pytest.raises(ValueError, match="on device 'meta'"):
        fxt.cross_entropy(x.to("meta"), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="class-index targets need shape"):
        fxt.cross_entropy(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="weight has shape"):
        fxt.cross_entropy(x, torch.zeros(5, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match="reduction='avg'"):
        fxt.cross_entropy(x, torch.zeros(5, dtype=torch.long), reduction="avg")
    with pytest.raises(ValueError, match="must be the same as input size"):
        fxt.binary_cross_entropy_with_logits(x, torch.zeros(5))
    with pytest.raises(TypeError, match="int32"):
        fxt.cross_entropy(x.int(), torch.zeros(5, dtype=torch.long))


# ------------------------------------------------------------------------------- BCE

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 5), (4,)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_pytorch(dtype, shape, reduction):
    g = torch.Generator().manual_seed(7)
    C = shape[-1]
    weights = [None, torch.rand(C, generator=g, dtype=dtype),
               torch.rand(shape, generator=g, dtype=dtype) - 0.3,
               torch.rand(shape[:-1] + (1,), generator=g, dtype=dtype)]
    pos = [None, torch.rand(C, generator=g, dtype=dtype) * 3,
           torch.tensor(2.5, dtype=dtype)]
    for w in weights:
        for pw in pos:
            x = (4 * torch.randn(shape, generator=g, dtype=dtype)).requires_grad_()
            y = torch.rand(shape, generator=g, dtype=dtype).requires_grad_()
            kw = dict(weight=w, pos_weight=pw, reduction=reduction)
            a = fxt.binary_cross_entropy_with_logits(x, y, **kw)
            b = F.binary_cross_entropy_with_logits(x, y, **kw)
            assert a.shape == b.shape and a.dtype == dtype
            _close(a, b, dtype)
            up = torch.randn_like(b) if b.dim() else torch.tensor(0.6, dtype=dtype)
            for ga, gb in zip(torch.autograd.grad(a, (x, y), up),
                              torch.autograd.grad(b, (x, y), up)):
                _close(ga, gb, dtype)


def test_modules():
    w = torch.rand(5) + 0.5
    x = torch.randn(8, 5)
    t = torch.randint(0, 5, (8,))
    for kw in (dict(), dict(weight=w, label_smoothing=0.2, reduction="sum"),
               dict(ignore_index=2, reduction="none")):
        _close(fxt.CrossEntropyLoss(**kw)(x, t), torch.nn.CrossEntropyLoss(**kw)(x, t),
               torch.float32)
    y = torch.rand(8, 5)
    for kw in (dict(), dict(weight=w, pos_weight=w * 2, reduction="sum")):
        _close(fxt.BCEWithLogitsLoss(**kw)(x, y), torch.nn.BCEWithLogitsLoss(**kw)(x, y),
               torch.float32)
    m = fxt.CrossEntropyLoss(weight=w)
    assert "weight" in dict(m.named_buffers())


# ------------------------------------------------------------------ linear_cross_entropy

def _ref_lce(input, linear_weight, target, *, linear_bias=None, **kw):
    return F.cross_entropy(F.linear(input, linear_weight, linear_bias), target, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("prob", [False, True])
def test_linear_cross_entropy_matches_pytorch(dtype, reduction, prob):
    g = torch.Generator().manual_seed(11)
    N, D, C = 9, 6, 7
    for bias in (False, True):
        for weighted in (False, True):
            for eps, ignore_index in ((0.0, -100), (0.25, 3)):
                if prob and ignore_index != -100:
                    continue
                x = torch.randn(N, D, generator=g, dtype=dtype, requires_grad=True)
                W = torch.randn(C, D, generator=g, dtype=dtype, requires_grad=True)
                b = (torch.randn(C, generator=g, dtype=dtype, requires_grad=True) if bias
                     else None)
                w = torch.rand(C, generator=g, dtype=dtype) + 0.3 if weighted else None
                if prob:
                    t = torch.softmax(torch.randn(N, C, generator=g, dtype=dtype), 1)
                else:
                    t = torch.randint(0, C, (N,), generator=g)
                    t[1] = ignore_index
                kw = dict(weight=w, reduction=reduction, label_smoothing=eps,
                          ignore_index=ignore_index)
                a = fxt.linear_cross_entropy(x, W, t, linear_bias=b, **kw)
                r = F.cross_entropy(F.linear(x, W, b), t, **kw)
                _close(a, r, dtype)
                up = torch.randn_like(r) if r.dim() else torch.tensor(0.7, dtype=dtype)
                ps = [p for p in (x, W, b) if p is not None]
                for ga, gr in zip(torch.autograd.grad(a, ps, up),
                                  torch.autograd.grad(r, ps, up)):
                    _close(ga, gr, dtype)


def test_linear_cross_entropy_partial_grads_module_and_pytorch_api():
    torch.manual_seed(5)
    x = torch.randn(10, 8)
    t = torch.randint(0, 10, (10,))
    m = fxt.LinearCrossEntropyLoss(8, 10, bias=True, label_smoothing=0.1)
    a, r = m(x, t), F.cross_entropy(m.linear(x), t, label_smoothing=0.1)
    if hasattr(torch.nn, "LinearCrossEntropyLoss"):  # PyTorch >= 2.13
        ref = torch.nn.LinearCrossEntropyLoss(8, 10, bias=True, label_smoothing=0.1)
        ref.load_state_dict(m.state_dict())
        r = ref(x, t)
    _close(a, r, torch.float32)
    a.backward()
    for p in m.parameters():
        _close(p.grad, torch.autograd.grad(
            F.cross_entropy(m.linear(x), t, label_smoothing=0.1), p)[0], torch.float32)
    # only the weight requires grad; no grad at all
    W = torch.randn(10, 8, requires_grad=True)
    gw, = torch.autograd.grad(fxt.linear_cross_entropy(x, W, t), W)
    _close(gw, torch.autograd.grad(_ref_lce(x, W, t), W)[0], torch.float32)
    with torch.no_grad():
        _close(fxt.linear_cross_entropy(x, W, t), _ref_lce(x, W, t), torch.float32)
        # beyond PyTorch (1-D or 2-D input only): leading dims are flattened
        _close(fxt.linear_cross_entropy(x.reshape(2, 5, 8), W, t.reshape(2, 5),
                                        reduction="none"),
               _ref_lce(x, W, t, reduction="none").reshape(2, 5), torch.float32)
        _close(fxt.linear_cross_entropy(x[0], W, t[0]), _ref_lce(x[0], W, t[0]),
               torch.float32)


# ------------------------------------------------------------------ gradcheck / opcheck

def test_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 5, (4, 2), generator=g)
    w = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    y = torch.softmax(torch.randn(4, 5, 2, generator=g, dtype=torch.float64), 1)
    y.requires_grad_()
    for red in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda x: fxt.cross_entropy(x, t, w, reduction=red, label_smoothing=0.1), (x,))
        assert torch.autograd.gradcheck(
            lambda x, y: fxt.cross_entropy(x, y, w, reduction=red, label_smoothing=0.1),
            (x, y))
    xb = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    yb = torch.rand(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    wb = torch.rand(4, generator=g, dtype=torch.float64)
    pw = torch.full((4,), 2.0, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x, y: fxt.binary_cross_entropy_with_logits(x, y, wb, pos_weight=pw), (xb, yb))
    W = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    tl = torch.tensor([0, 4, -100])
    for red in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda x, W, b: fxt.linear_cross_entropy(x, W, tl, linear_bias=b, weight=w,
                                                     reduction=red, label_smoothing=0.1),
            (xb, W, b))


def test_opcheck():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, generator=g, requires_grad=True)
    t = torch.randint(0, 5, (6,), generator=g)
    y = torch.softmax(torch.randn(6, 5, generator=g), 1).requires_grad_()
    w = torch.rand(5, generator=g) + 0.5
    W = torch.randn(5, 5, generator=g, requires_grad=True)
    b = torch.randn(5, generator=g, requires_grad=True)
    ops = torch.ops.fastxent
    samples = [
        (ops.cross_entropy.default, (x, t, None, -100, "mean", 0.0, True)),
        (ops.cross_entropy.default, (x, t, w, 2, "none", 0.1, True)),
        (ops.cross_entropy.default, (x, y, w, -100, "sum", 0.2, True)),
        (ops.cross_entropy.default, (x.detach(), t, None, -100, "mean", 0.0, False)),
        (ops.bce_with_logits.default, (x, y, w, w, "mean", True)),
        (ops.bce_with_logits.default, (x, y, None, None, "none", True)),
        (ops.linear_cross_entropy.default,
         (x, W, t, b, w, -100, "mean", 0.1, True, True, True)),
        (ops.linear_cross_entropy.default,
         (x, W, t, None, None, 1, "sum", 0.0, False, True, False)),
        (ops.linear_cross_entropy.default,
         (x, W, t, b, None, -100, "none", 0.0, True, True, True)),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


# ------------------------------------------------------------------------ torch.compile

def test_compile_fullgraph_training_step(monkeypatch):
    def eager_route(*a):
        raise AssertionError("the eager autograd.Function ran under torch.compile")

    # under compile the custom ops (fastxent::...) must be traced, not the eager route
    monkeypatch.setattr(fxt._CrossEntropyFn, "apply", eager_route)
    monkeypatch.setattr(fxt._BCEFn, "apply", eager_route)
    monkeypatch.setattr(fxt._LinearCEFn, "apply", eager_route)
    torch.manual_seed(0)
    D, H, C, N = 8, 16, 6, 12

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(),
                                   torch.nn.Linear(H, C))

    x = torch.randn(N, D)
    t = torch.randint(0, C, (N,))
    t[0] = -100
    yb = torch.rand(N, C)

    def loss_of(model, ce, bce, lce):
        h = model[:2](x)
        out = model[2](h)
        return (ce(out, t, label_smoothing=0.1) + 0.5 * bce(out, yb) +
                lce(h, model[2].weight, t, linear_bias=model[2].bias, reduction="sum"))

    def step(opt, loss_fn):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.detach()

    ref_model = make()
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # forward and (AOTAutograd's) backward compiled as one graph each, no graph break
    compiled = torch.compile(
        lambda: loss_of(model, fxt.cross_entropy, fxt.binary_cross_entropy_with_logits,
                        fxt.linear_cross_entropy),
        fullgraph=True)
    for _ in range(2):
        a = step(opt, compiled)
        b = step(ref_opt, lambda: loss_of(ref_model, F.cross_entropy,
                                         F.binary_cross_entropy_with_logits,
                                         _ref_lce))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
