"""Kernel ABI conformance: every compiled backend against the NumPy reference, below the
public API (no validation, no reduction), on exactly the contract of ``fastxent._backends``:
same outputs and totals, in-place safety, bad-label counts, exact zeros for masked classes,
the same bits for any thread count, read-only inputs, and the dominant class's tail."""

import numpy as np
import pytest

from fastxent import _backends as K
from fastxent import _registry
from fastxent._backends import kernel_call
from fastxent._backends import numpy_ as ref

COMPILED = [b for b in _registry.known_backends() if b != "numpy"]
SHAPES = [(1, 1), (3, 2), (7, 3), (130, 10), (33, 40), (64, 1000), (5, 4099), (2, 70000)]
RTOL = {np.float32: 3e-5, np.float64: 1e-12}


@pytest.fixture(params=COMPILED)
def backend(request):
    from .conftest import REQUIRED
    module = _registry.load(request.param)
    if module is None:
        if request.param in REQUIRED:
            pytest.fail(f"backend {request.param!r} is required here but unavailable: "
                        f"{_registry.why(request.param)}")
        pytest.skip(f"{request.param} backend unavailable: {_registry.why(request.param)}")
    return module


def _data(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    n, c = shape
    return dict(x=(rng.standard_normal(shape) * scale).astype(dtype),
                y=rng.random(shape).astype(dtype),
                t=rng.integers(0, c, n).astype(np.intp),
                cw=(rng.random(c) + 0.5).astype(dtype),
                v=rng.standard_normal(shape).astype(dtype),
                rs=(rng.random(n) + 0.5).astype(dtype))


def _close(a, b, dtype, what=""):
    np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype] * 10, err_msg=what)


def _outputs(family, shape, dtype, loss_2d=False):
    n, c = shape
    if family == K.LOGSUMEXP:
        return dict(grad=np.full(n, np.nan, dtype))
    out = dict(grad=np.full(shape, np.nan, dtype))
    if family in (K.SOFTMAX, K.SIGMOID):
        out["loss"] = np.full(shape if loss_2d else n, np.nan, dtype)
    return out


def _both(backend, family, x, n_threads=2, outputs=None, **fields):
    """Run one call on the reference and on ``backend`` with fresh outputs; returns
    ((status, outputs) for each)."""
    results = []
    for module in (ref, backend):
        outs = {k: np.full_like(v, np.nan) for k, v in (outputs or {}).items()}
        call = kernel_call(family, x, **fields, **outs)
        results.append((module.run(call, n_threads), outs))
    return results


OPTIONS = [dict(), dict(eps=0.1, cw=True), dict(z=1e-3), dict(eps=0.2, z=1e-2, cw=True),
           dict(softcap=5.0), dict(ignore_index=1, eps=0.1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("labels", ["dense", "integer", "broadcast"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_softmax_matches_reference(backend, dtype, shape, labels, opts):
    d = _data(shape, dtype)
    fields = dict(rs=d["rs"], gscale=0.7, want_total=True, eps=opts.get("eps", 0.0),
                  z=opts.get("z", 0.0), softcap=opts.get("softcap", 0.0),
                  cw=d["cw"] if opts.get("cw") else None)
    if labels == "integer":
        fields.update(t=d["t"], ignore_index=opts.get("ignore_index"))
    else:
        fields["y"] = d["y"][:1] if labels == "broadcast" else d["y"]
    outs = _outputs(K.SOFTMAX, shape, dtype)
    outs["lse_out"] = np.empty(shape[0], dtype)
    (s0, want), (s1, got) = _both(backend, K.SOFTMAX, d["x"], outputs=outs, **fields)
    for key in want:
        _close(got[key], want[key], dtype, key)
    assert s1.nbad == s0.nbad == 0
    np.testing.assert_allclose(s1.total, s0.total, rtol=RTOL[dtype] * 10)
    # forward only, and backward only, agree with the fused call
    (_, fwd), = [_both(backend, K.SOFTMAX, d["x"], outputs={"loss": outs["loss"]},
                       **fields)[1]]
    _close(fwd["loss"], want["loss"], dtype, "forward")
    (_, bwd), = [_both(backend, K.SOFTMAX, d["x"], outputs={"grad": outs["grad"]},
                       **fields)[1]]
    _close(bwd["grad"], want["grad"], dtype, "backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 3), (33, 40), (5, 4099)])
@pytest.mark.parametrize("integer", [False, True])
def test_backward_from_saved_lse_and_class_shards(backend, dtype, shape, integer):
    d = _data(shape, dtype, seed=1)
    lse = np.empty(shape[0], dtype)
    ref.run(kernel_call(K.LOGSUMEXP, d["x"], grad=lse), 1)
    labels = dict(t=d["t"]) if integer else dict(y=d["y"])
    (_, want), (_, got) = _both(backend, K.SOFTMAX, d["x"], lse_in=lse, rs=d["rs"], eps=0.1,
                                cw=d["cw"], z=1e-3, outputs={"grad": np.empty(shape, dtype)},
                                **labels)
    _close(got["grad"], want["grad"], dtype)
    # a class shard: the coefficient given, labels outside the shard not errors
    coef = (d["rs"] * 0 + 1.3).astype(dtype)
    t = d["t"] + (shape[1] // 2)  # some targets fall in the next shard
    (s0, want), (s1, got) = _both(backend, K.SOFTMAX, d["x"], lse_in=lse, coef_in=coef,
                                  t=t, shard=True, eps=0.1, n_classes=2 * shape[1],
                                  outputs={"grad": np.empty(shape, dtype)})
    assert s0.nbad == s1.nbad == 0
    _close(got["grad"], want["grad"], dtype, "shard")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 3), (33, 40), (5, 4099)])
@pytest.mark.parametrize("integer", [False, True])
def test_hessp_and_label_gradient_match_reference(backend, dtype, shape, integer):
    d = _data(shape, dtype, seed=2)
    labels = dict(t=d["t"]) if integer else dict(y=d["y"])
    (_, want), (_, got) = _both(backend, K.HESSP, d["x"], v=d["v"], rs=d["rs"], eps=0.1,
                                cw=d["cw"], z=1e-2, outputs={"grad": np.empty(shape, dtype)},
                                **labels)
    _close(got["grad"], want["grad"], dtype, "hessp")
    (_, want), (_, got) = _both(backend, K.LABEL_GRAD, d["x"], rs=d["rs"], eps=0.1,
                                cw=d["cw"], outputs={"grad": np.empty(shape, dtype)})
    _close(got["grad"], want["grad"], dtype, "label_grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 40), (64, 1000)])
@pytest.mark.parametrize("weights", [None, "row", "element"])
@pytest.mark.parametrize("loss_2d", [False, True])
def test_sigmoid_matches_reference(backend, dtype, shape, weights, loss_2d):
    d = _data(shape, dtype, seed=3)
    y = (d["y"] > 0.5).astype(dtype)
    rs = {None: None, "row": d["rs"], "element": d["v"] * d["v"] + 0.1}[weights]
    outs = _outputs(K.SIGMOID, shape, dtype, loss_2d)
    (s0, want), (s1, got) = _both(backend, K.SIGMOID, d["x"], y=y, cw=d["cw"], eps=0.1,
                                  rs=None if rs is None else rs.astype(dtype), gscale=0.5,
                                  want_total=True, outputs=outs)
    for key in want:
        _close(got[key], want[key], dtype, key)
    np.testing.assert_allclose(s1.total, s0.total, rtol=RTOL[dtype] * 10)
    (_, want), (_, got) = _both(backend, K.SIGMOID_LABEL_GRAD, d["x"], cw=d["cw"], eps=0.1,
                                outputs={"grad": np.empty(shape, dtype)})
    _close(got["grad"], want["grad"], dtype, "sigmoid label grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("family", [K.LOGSUMEXP, K.LOG_SOFTMAX, K.SOFTMAX_PROB])
def test_utilities_match_reference(backend, dtype, shape, family):
    d = _data(shape, dtype, seed=4, scale=30)
    (_, want), (_, got) = _both(backend, family, d["x"], outputs=_outputs(family, shape, dtype))
    _close(got["grad"], want["grad"], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 3), (40, 50), (3, 5000)])
def test_in_place_gradients_equal_out_of_place(backend, dtype, shape):
    d = _data(shape, dtype, seed=5)
    for family, fields in [(K.SOFTMAX, dict(t=d["t"], eps=0.1)),
                           (K.SOFTMAX, dict(y=d["y"], z=1e-3)),
                           (K.SOFTMAX, dict(t=d["t"], softcap=4.0)),
                           (K.SIGMOID, dict(y=d["y"])),
                           (K.LOG_SOFTMAX, {}), (K.SOFTMAX_PROB, {})]:
        out = np.empty(shape, dtype)
        backend.run(kernel_call(family, d["x"], grad=out, **fields), 2)
        xx = d["x"].copy()
        backend.run(kernel_call(family, xx, grad=xx, **fields), 2)
        np.testing.assert_array_equal(xx, out, err_msg=str(fields))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [3, 40, 5000])
def test_bad_labels_are_counted_and_never_read(backend, dtype, c):
    d = _data((6, c), dtype, seed=6)
    t = d["t"]
    t[[1, 4]] = [c, -(2 ** 62)]
    t[2] = -100
    for fields, want in [(dict(ignore_index=-100), 2), (dict(), 3)]:
        for family, outs in [(K.SOFTMAX, dict(loss=np.empty(6, dtype),
                                              grad=np.empty((6, c), dtype))),
                             (K.HESSP, dict(grad=np.empty((6, c), dtype)))]:
            status = backend.run(kernel_call(family, d["x"], t=t, v=d["v"], **outs, **fields), 2)
            assert status.nbad == want
            assert np.all(outs["grad"][[1, 4]] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [10, 50, 3000])
def test_masked_classes_contribute_exact_zero_and_nan_stays_in_its_row(backend, dtype, c):
    d = _data((4, c), dtype, seed=7)
    x, y, t = d["x"], d["y"], d["t"]
    x[:, ::3] = -np.inf
    y[:, ::3] = 0
    t[:] = 1
    x[2, 5] = np.nan
    for fields in (dict(y=y), dict(t=t)):
        (_, want), (_, got) = _both(backend, K.SOFTMAX, x,
                                    outputs=dict(loss=np.empty(4, dtype),
                                                 grad=np.empty((4, c), dtype)), **fields)
        loss, grad = got["loss"], got["grad"]
        assert np.isnan(loss[2]) and np.isfinite(loss[[0, 1, 3]]).all()
        assert np.all(grad[[0, 1, 3], ::3] == 0)
        _close(loss[[0, 1, 3]], want["loss"][[0, 1, 3]], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1000, 3), (1000, 40), (64, 5000), (3, 70000)])
def test_same_bits_for_any_thread_count(backend, dtype, shape):
    d = _data(shape, dtype, seed=8)
    results = []
    for n_threads in (1, 2, 3):
        got = []
        for labels in (dict(t=d["t"]), dict(y=d["y"])):
            loss, grad = np.empty(shape[0], dtype), np.empty(shape, dtype)
            status = backend.run(kernel_call(K.SOFTMAX, d["x"], cw=d["cw"], eps=0.1, z=1e-4,
                                             rs=d["rs"], loss=loss, grad=grad, **labels),
                                 n_threads)
            got += [loss, grad, status.total]
        results.append(got)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9, 40), (300, 3), (5000, 10)])
def test_every_input_may_be_read_only(backend, dtype, shape):
    d = _data(shape, dtype, seed=9)
    lse = np.empty(shape[0], dtype)
    ref.run(kernel_call(K.LOGSUMEXP, d["x"], grad=lse), 1)
    d["lse"] = lse
    for a in d.values():
        a.flags.writeable = False
    g = np.empty(shape, dtype)
    for family, fields in [
        (K.SOFTMAX, dict(y=d["y"], cw=d["cw"], eps=0.1, rs=d["rs"], lse_in=d["lse"])),
        (K.SOFTMAX, dict(t=d["t"], cw=d["cw"], rs=d["rs"], loss=np.empty(shape[0], dtype))),
        (K.HESSP, dict(t=d["t"], v=d["v"], rs=d["rs"])),
        (K.LABEL_GRAD, dict(cw=d["cw"], lse_in=d["lse"])),
        (K.SIGMOID, dict(y=d["y"], cw=d["cw"], rs=d["rs"])),
        (K.SOFTMAX_PROB, {}),
    ]:
        (_, want), (_, got) = _both(backend, family, d["x"], outputs={"grad": g}, **fields)
        _close(got["grad"], want["grad"], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 10, 3000])
def test_a_confident_row_keeps_its_tail(backend, dtype, c):
    # TensorFlow's tail-accuracy cases: [37.43, 0, ...] with the first class as the target:
    # the target's gradient is -(C - 1) exp(-37.43) / (1 + ...) and the loss log1p of that,
    # not 0 (in float32 the threshold is exp(-15))
    big = 37.43 if dtype == np.float64 else 15.0
    x = np.zeros((3, c), dtype)
    x[:, 0] = big
    t = np.zeros(3, np.intp)
    s1 = (c - 1) * np.exp(-big)
    for module in (ref, backend):
        loss, grad = np.empty(3, dtype), np.empty((3, c), dtype)
        module.run(kernel_call(K.SOFTMAX, x, t=t, loss=loss, grad=grad), 1)
        np.testing.assert_allclose(loss, np.log1p(s1), rtol=1e-5)
        np.testing.assert_allclose(grad[:, 0], -s1 / (1 + s1), rtol=1e-5)
        assert np.all(grad[:, 0] < 0)
        y = np.full((3, c), 0.5 / (c - 1), dtype)
        y[:, 0] = 0.5
        module.run(kernel_call(K.SOFTMAX, x, y=y, grad=grad), 1)
        assert np.all(grad[:, 0] < 0.5)
