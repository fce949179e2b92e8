"""fastxent.jax against optax: values and gradients (logits and labels), axis and where,
float32/float64, jit/grad/vmap, half precision, bad labels."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

if os.environ.get("FASTXENT_REQUIRE_BACKENDS"):
    import jax  # CI installs the test extra: a missing jax fails there, never skips
    import optax
else:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import fastxent  # noqa: E402
import fastxent.jax as fxj  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastxent.InputWarning)
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        old = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", True)
        yield jnp.float64
        jax.config.update("jax_enable_x64", old)
    else:
        yield jnp.float32


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == jnp.float32 else dict(rtol=1e-10,
                                                                         atol=1e-12)


def _close(a, b, dtype):
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **_tol(dtype))


def test_import_fastxent_imports_no_framework():
    code = ("import sys, fastxent; bad = [m for m in ('torch', 'jax', 'optax') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# (logits shape, axis): class axis last, in the middle, a tuple of axes
CASES = [((7, 5), -1), ((3, 4, 6), -1), ((3, 5, 4), 1), ((2, 2, 3, 4), (2, 3))]


def _batch_shape(shape, axis):
    axes = (axis,) if isinstance(axis, int) else axis
    axes = [a % len(shape) for a in axes]
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def _n_classes(shape, axis):
    axes = (axis,) if isinstance(axis, int) else axis
    return int(np.prod([shape[a] for a in axes]))


def _where_options(rng, shape, axis):
    batch = _batch_shape(shape, axis)
    row = rng.random(batch) > 0.3
    elem = rng.random(shape) > 0.2
    return [None, jnp.asarray(row), jnp.asarray(elem)]


def _one_hot(t, shape, axis):
    oh = jax.nn.one_hot(t, _n_classes(shape, axis), dtype=bool)  # batch + (C,)
    if isinstance(axis, int):
        return jnp.moveaxis(oh, -1, axis)
    return oh.reshape(shape)  # the tuple case in CASES has trailing class axes


@pytest.mark.parametrize("shape,axis", CASES)
def test_integer_labels_match_optax(dtype, shape, axis):
    rng = np.random.default_rng(1)
    C = _n_classes(shape, axis)
    x = jnp.asarray(3 * rng.standard_normal(shape), dtype)
    t = jnp.asarray(rng.integers(0, C, _batch_shape(shape, axis)))
    up = jnp.asarray(rng.standard_normal(t.shape), dtype)
    for where in _where_options(rng, shape, axis):
        if where is not None and where.shape == shape:
            # fastxent differs from optax only for labels at masked-out classes: keep them in
            where = where | _one_hot(t, shape, axis)

        def f(lib, x):
            return (lib(x, t, axis=axis, where=where) * up).sum()

        ours = fxj.softmax_cross_entropy_with_integer_labels(x, t, axis=axis, where=where)
        ref = jax.jit(optax.softmax_cross_entropy_with_integer_labels,
                      static_argnums=2)(x, t, axis, where)
        _close(ours, ref, dtype)
        g_ours = jax.jit(jax.grad(lambda x: f(fxj.softmax_cross_entropy_with_integer_labels,
                                              x)))(x)
        g_ref = jax.jit(jax.grad(lambda x: f(optax.softmax_cross_entropy_with_integer_labels,
                                             x)))(x)
        _close(g_ours, g_ref, dtype)


@pytest.mark.parametrize("shape,axis", CASES + [((3, 4), None)])
def test_dense_labels_match_optax(dtype, shape, axis):
    rng = np.random.default_rng(2)
    x = jnp.asarray(3 * rng.standard_normal(shape), dtype)
    y = jnp.asarray(rng.random(shape), dtype)  # soft, not normalised: the general case
    wheres = [None] if axis is None else _where_options(rng, shape, axis)
    for where in wheres:
        if where is not None and where.shape == shape and not isinstance(axis, int):
            continue  # optax's where with tuple axes is per example only

        def f(lib, x, y):
            return (lib(x, y, axis=axis, where=where) ** 2).sum()

        _close(fxj.softmax_cross_entropy(x, y, axis=axis, where=where),
               jax.jit(optax.softmax_cross_entropy, static_argnums=2)(x, y, axis, where),
               dtype)
        ours = jax.jit(jax.grad(lambda x, y: f(fxj.softmax_cross_entropy, x, y),
                                argnums=(0, 1)))(x, y)
        ref = jax.jit(jax.grad(lambda x, y: f(optax.softmax_cross_entropy, x, y),
                               argnums=(0, 1)))(x, y)
        for a, b in zip(ours, ref):
            if where is not None:
                # optax's gradients at excluded examples / elements are NaN; ours are finite
                keep = where if where.shape == shape else jnp.expand_dims(where, axis)
                assert np.isfinite(np.asarray(a)).all()
                a, b = jnp.where(keep, a, 0.0), jnp.where(keep, b, 0.0)
            _close(a, b, dtype)


@pytest.mark.parametrize("shape,lshape", [((6, 4), (6, 4)), ((3, 2, 5), (5,)), ((4,), ())])
def test_sigmoid_matches_optax(dtype, shape, lshape):
    rng = np.random.default_rng(3)
    x = jnp.asarray(5 * rng.standard_normal(shape), dtype)
    y = jnp.asarray(rng.random(lshape), dtype)
    _close(fxj.sigmoid_binary_cross_entropy(x, y), optax.sigmoid_binary_cross_entropy(x, y),
           dtype)

    def f(lib, x, y):
        return (jnp.cos(lib(x, y))).sum()

    ours = jax.jit(jax.grad(lambda x, y: f(fxj.sigmoid_binary_cross_entropy, x, y),
                            argnums=(0, 1)))(x, y)
    ref = jax.jit(jax.grad(lambda x, y: f(optax.sigmoid_binary_cross_entropy, x, y),
                           argnums=(0, 1)))(x, y)
    for a, b in zip(ours, ref):
        _close(a, b, dtype)


def test_vmap_jit_grad(dtype):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, 5, 6)), dtype)
    t = jnp.asarray(rng.integers(0, 6, (3, 5)))
    y = jax.nn.softmax(jnp.asarray(rng.standard_normal((5, 6)), dtype))
    # batched logits and labels; unbatched labels broadcast (vmap_method="broadcast_all")
    v = jax.vmap(fxj.softmax_cross_entropy_with_integer_labels)(x, t)
    _close(v, jax.jit(optax.softmax_cross_entropy_with_integer_labels)(x, t), dtype)
    v = jax.jit(jax.vmap(fxj.softmax_cross_entropy, in_axes=(0, None)))(x, y)
    _close(v, jax.jit(optax.softmax_cross_entropy)(x, y), dtype)
    v = jax.jit(jax.vmap(fxj.sigmoid_binary_cross_entropy, in_axes=(1, None)))(x, y[0])
    _close(v, jax.jit(optax.sigmoid_binary_cross_entropy)(jnp.moveaxis(x, 1, 0), y[0]),
           dtype)

    # per-example gradients: vmap of grad, under jit
    def loss(lib, x, t):
        return lib.softmax_cross_entropy_with_integer_labels(x, t).mean()

    ours = jax.jit(jax.vmap(jax.grad(lambda x, t: loss(fxj, x, t))))(x, t)
    ref = jax.jit(jax.vmap(jax.grad(lambda x, t: loss(optax, x, t))))(x, t)
    _close(ours, ref, dtype)
    # value_and_grad through a small model
    W = jnp.asarray(rng.standard_normal((4, 6)), dtype)
    h = jnp.asarray(rng.standard_normal((5, 4)), dtype)

    def model_loss(lib, W):
        return lib.softmax_cross_entropy_with_integer_labels(h @ W, t[0]).mean()

    a = jax.jit(jax.value_and_grad(lambda W: model_loss(fxj, W)))(W)
    b = jax.jit(jax.value_and_grad(lambda W: model_loss(optax, W)))(W)
    _close(a[0], b[0], dtype)
    _close(a[1], b[1], dtype)


@pytest.mark.parametrize("route", ["buffer_callback", "pure_callback"])
def test_both_callback_routes(route, monkeypatch):
    """The zero-copy buffer_callback route and the pure_callback one (jax without
    buffer_callback) give optax's values and gradients, under jit and vmap."""
    if route == "pure_callback":
        monkeypatch.setattr(fxj, "_buffer_callback", None)
    elif fxj._buffer_callback is None:
        pytest.fail("this jax has no jax.experimental.buffer_callback")
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.standard_normal((2, 6, 9)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 9, (2, 6)))
    y = jax.nn.softmax(jnp.asarray(rng.standard_normal((2, 6, 9)), jnp.float32))
    for name, labels in (("softmax_cross_entropy_with_integer_labels", t),
                         ("softmax_cross_entropy", y), ("sigmoid_binary_cross_entropy", y)):
        def total(lib, x, labels, name=name):
            return getattr(lib, name)(x, labels).sum()
        ours = jax.jit(jax.vmap(jax.value_and_grad(lambda x, z: total(fxj, x, z))))(x, labels)
        ref = jax.vmap(jax.value_and_grad(lambda x, z: total(optax, x, z)))(x, labels)
        for a, b in zip(ours, ref):
            _close(a, b, jnp.float32)


def test_half_precision():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((4, 7)), jnp.bfloat16)
    t = jnp.array([0, 1, 6, 3])
    out = fxj.softmax_cross_entropy_with_integer_labels(x, t)
    assert out.dtype == jnp.bfloat16
    ref = optax.softmax_cross_entropy_with_integer_labels(x.astype(jnp.float32), t)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=1e-2, atol=1e-2)
    g = jax.grad(lambda x: fxj.softmax_cross_entropy_with_integer_labels(x, t).sum())(x)
    assert g.dtype == jnp.bfloat16


def test_bad_labels_raise():
    x = jnp.zeros((4, 3))
    t = jnp.array([0, 1, 3, 2])
    with pytest.raises(Exception, match=r"labels\[2\] = 3 is not a class index"):
        jax.block_until_ready(fxj.softmax_cross_entropy_with_integer_labels(x, t))
    with pytest.raises(Exception, match=r"labels\[1\] = -1 is not a class index"):
        jax.block_until_ready(
            jax.jit(fxj.softmax_cross_entropy_with_integer_labels)(x, t.at[1].set(-1)))
    # rows excluded by where may hold anything
    out = fxj.softmax_cross_entropy_with_integer_labels(
        x, t, where=jnp.array([True, True, False, True]))
    assert float(out[2]) == 0.0
    with pytest.raises(TypeError, match="integer class indices"):
        fxj.softmax_cross_entropy_with_integer_labels(x, t.astype(jnp.float32))
    with pytest.raises(ValueError, match="labels need shape"):
        fxj.softmax_cross_entropy_with_integer_labels(x, t[:3])
