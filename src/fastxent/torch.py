"""PyTorch integration: fastxent's kernels as PyTorch losses (CPU tensors).

``cross_entropy``, ``binary_cross_entropy_with_logits`` and ``linear_cross_entropy`` have
PyTorch's signatures and semantics; ``CrossEntropyLoss``, ``BCEWithLogitsLoss`` and
``LinearCrossEntropyLoss`` are the ``nn.Module`` wrappers with PyTorch's constructor
arguments. Install with ``pip install "fastxent[torch]"``; ``import fastxent`` never imports
torch.

How it runs (a. to e.):

a. One fused kernel pass per forward: the loss and d loss / d input (for an upstream
   gradient of 1) are computed together while the logits are in cache; backward only scales
   that gradient (and hands it back untouched when the upstream gradient is 1, the usual
   case for a mean). Without grad (``no_grad``, inputs that do not require it) the forward
   computes the loss only.
b. Two routes to the same code: eagerly, a ``torch.autograd.Function`` (the cheapest
   dispatch); under ``torch.compile`` (``torch.compiler.is_compiling()``), the
   ``torch.library.custom_op`` s ``fastxent::cross_entropy``, ``fastxent::bce_with_logits``,
   ``fastxent::linear_cross_entropy`` and their backward ops, with ``register_fake`` and
   ``register_autograd``, so ``torch.compile(fullgraph=True)`` traces through them.
c. Zero copies between torch and NumPy for contiguous CPU tensors (``.detach().numpy()``,
   ``torch.from_numpy``); a non-contiguous tensor is made contiguous once; float16 and
   bfloat16 are computed in float32 and returned in the input's dtype.
d. Tensors on any device but the CPU raise ``ValueError`` naming the device.
e. Threads: fastxent's own setting (:func:`fastxent.set_num_threads`,
   :func:`fastxent.threads`), not ``torch.set_num_threads``.

Deliberate differences from PyTorch (documented, tested):

- A mean over nothing (every target ignored, or class weights of the kept targets summing to
  0) is 0 with a zero gradient; PyTorch returns NaN (0 / 0).
- fastxent's value diagnostics (``fastxent.set_check("warn")``) apply when turned on: a
  warning (:class:`fastxent.InputWarning`) for NaN/inf logits and other suspicious values.
"""

import functools
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from .losses import SigmoidCrossEntropy, SoftmaxCrossEntropy, SparseSoftmaxCrossEntropy

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits", "linear_cross_entropy",
           "CrossEntropyLoss", "BCEWithLogitsLoss", "LinearCrossEntropyLoss"]

_REDUCTIONS = ("none", "mean", "sum")
_HALF = (torch.float16, torch.bfloat16)
_NAMES = ("target", "input")
_NP_FLOAT = {torch.float32: np.float32, torch.float64: np.float64}


# ------------------------------------------------------------------------------ the edge

def _check_cpu(t, name):
    if t is not None and not t.is_cpu:
        raise ValueError(
            f"fastxent.torch computes on the CPU, but {name} is on device '{t.device}'; move "
            f"the tensors with .cpu() (or use torch.nn.functional on '{t.device.type}')")


def _compute_dtype(input, name="input"):
    if input.dtype in _HALF:
        return torch.float32
    if input.dtype not in _NP_FLOAT:
        raise TypeError(f"{name} has dtype {input.dtype}; fastxent.torch takes float16, "
                        f"bfloat16, float32 or float64 logits")
    return input.dtype


def _np(t, dtype=None):
    """A NumPy view of a CPU tensor (a copy only to convert the dtype or the layout)."""
    if t.requires_grad:
        t = t.detach()
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


def _tensor(a, dtype):
    """A tensor over a NumPy result (no copy unless the dtype differs)."""
    out = torch.from_numpy(np.asarray(a))
    return out if out.dtype == dtype else out.to(dtype)


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not a valid value for reduction; use "
                         f"'none', 'mean' or 'sum'")


def _loss_shape(input, reduction):
    if reduction != "none":
        return ()
    return tuple(input.shape[:1]) + tuple(input.shape[2:])


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in tensors)


def _scale(grad, grad_output, reduction, eager):
    """d loss / d input from the saved unit gradient and the upstream gradient."""
    if reduction == "none":
        if grad_output.dim():
            grad_output = grad_output.unsqueeze(1)
        return grad * grad_output
    if eager and grad_output.item() == 1.0:
        return grad  # the usual case for a mean: no pass over the data
    return grad * grad_output


# --------------------------------------------------------------------- softmax: the work

@functools.lru_cache(maxsize=128)
def _softmax_loss(prob, ignore_index, label_smoothing, reduction, class_weight=None):
    """The loss object of an option set (cached when it has no class weights)."""
    if prob:
        obj = SoftmaxCrossEntropy(axis=1, label_smoothing=label_smoothing,
                                  class_weight=class_weight, reduction=reduction)
    else:
        obj = SparseSoftmaxCrossEntropy(axis=1, ignore_index=ignore_index,
                                        label_smoothing=label_smoothing,
                                        class_weight=class_weight, reduction=reduction)
    obj._opts.names = _NAMES  # errors speak of PyTorch's argument names
    return obj


def _softmax_obj(prob, weight, ignore_index, label_smoothing, reduction, dtype):
    if weight is None:
        return _softmax_loss(prob, ignore_index, label_smoothing, reduction)
    return _softmax_loss.__wrapped__(prob, ignore_index, label_smoothing, reduction,
                                     _np(weight, dtype))


def _ce_impl(input, target, weight, ignore_index, reduction, label_smoothing, need_grad):
    """(loss, unit gradient or None) of cross_entropy on CPU tensors, input ndim >= 2."""
    if not (input.is_cpu and target.is_cpu):
        _check_cpu(input, "input")
        _check_cpu(target, "target")
    if weight is not None:
        _check_cpu(weight, "weight")
    cdt = _compute_dtype(input)
    x = _np(input, cdt)
    prob = target.is_floating_point()
    y = _np(target, cdt) if prob else _np(target)
    obj = _softmax_obj(prob, weight, ignore_index, label_smoothing, reduction, cdt)
    if need_grad:
        loss, grad = obj.loss_gradient(y, x)
        grad = _tensor(grad, input.dtype)
        if not grad.is_contiguous():  # (N, C, d1, ...): the class axis was moved back
            grad = grad.contiguous()
    else:
        loss, grad = obj.loss(y, x), None
    return _tensor(loss, input.dtype), grad


def _ce_target_grad_impl(input, weight, grad_output, reduction, label_smoothing):
    """d loss / d probability targets: (1 - eps) w (lse - x) times the upstream gradient."""
    cdt = _compute_dtype(input)
    x = _np(input, cdt)
    obj = _softmax_obj(True, weight, -100, label_smoothing, reduction, cdt)
    go = _np(grad_output, cdt)
    g = obj.labels_gradient(None, x, grad_loss=go if reduction == "none" else float(go))
    g = _tensor(g, input.dtype)
    return g if g.is_contiguous() else g.contiguous()


# ------------------------------------------------------------- softmax: eager and compiled

def _keep_for_backward(ctx, grad, input, recompute):
    """Save the forward pass's unit gradient. When ``input`` is a leaf, the first backward
    hands it over (with no other reference left, autograd stores it as ``.grad`` without
    the N x C clone it makes otherwise) and a later backward (``retain_graph``, gradcheck)
    recomputes it; the leaf is alive anyway, so keeping it costs nothing. A non-leaf input
    is not kept (its memory is freed after the forward pass); its gradient stays saved."""
    ctx.grad = grad
    ctx.recompute = recompute if input.is_leaf else None


def _hand_over(ctx):
    grad = ctx.grad
    if ctx.recompute is None:
        return grad
    if grad is None:
        return ctx.recompute()
    ctx.grad = None
    return grad


class _CrossEntropyFn(torch.autograd.Function):
    """Eager route (fewer microseconds of dispatch than a custom op)."""

    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing):
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss, grad = _ce_impl(input, target, weight, ignore_index, reduction,
                              label_smoothing, need_x)
        _keep_for_backward(ctx, grad, input, lambda: _ce_impl(
            input, target, weight, ignore_index, reduction, label_smoothing, True)[1])
        ctx.options = (reduction, label_smoothing)
        if need_y:
            ctx.save_for_backward(input, weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        reduction, eps = ctx.options
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = _scale(_hand_over(ctx), grad_output, reduction, eager=True)
        if ctx.needs_input_grad[1]:
            input, weight = ctx.saved_tensors
            gy = _ce_target_grad_impl(input, weight, grad_output, reduction, eps)
        return gx, gy, None, None, None, None


@torch.library.custom_op("fastxent::cross_entropy", mutates_args=())
def _ce_op(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
           reduction: str, label_smoothing: float, need_grad: bool) -> tuple[Tensor, Tensor]:
    loss, grad = _ce_impl(input, target, weight, ignore_index, reduction, label_smoothing,
                          need_grad)
    return loss, (grad if grad is not None else input.new_empty(0))


@_ce_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, need_grad):
    loss = input.new_empty(_loss_shape(input, reduction))
    grad = (torch.empty_like(input, memory_format=torch.contiguous_format) if need_grad
            else input.new_empty(0))
    return loss, grad


@torch.library.custom_op("fastxent::cross_entropy_target_grad", mutates_args=())
def _ce_target_grad_op(input: Tensor, weight: Optional[Tensor], grad_output: Tensor,
                       reduction: str, label_smoothing: float) -> Tensor:
    return _ce_target_grad_impl(input, weight, grad_output, reduction, label_smoothing)


@_ce_target_grad_op.register_fake
def _(input, weight, grad_output, reduction, label_smoothing):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _ce_setup(ctx, inputs, output):
    input, target, weight, _, reduction, label_smoothing, _ = inputs
    ctx.options = (reduction, label_smoothing)
    ctx.target_is_prob = target.is_floating_point()
    ctx.save_for_backward(output[1], input, weight)


def _ce_backward(ctx, grad_loss, _grad_grad):
    reduction, eps = ctx.options
    grad, input, weight = ctx.saved_tensors
    gx = gy = None
    if ctx.needs_input_grad[0]:
        gx = _scale(grad, grad_loss, reduction, eager=False)
    if ctx.needs_input_grad[1] and ctx.target_is_prob:
        gy = _ce_target_grad_op(input, weight, grad_loss, reduction, eps)
    return gx, gy, None, None, None, None, None


_ce_op.register_autograd(_ce_backward, setup_context=_ce_setup)


def _check_ce_args(input, target, weight, reduction, label_smoothing, ignore_index):
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"input and target must be tensors, got {type(input).__name__} and "
                        f"{type(target).__name__}")
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing!r} must be in [0, 1]")
    if input.dim() < 1:
        raise ValueError("input must have at least 1 dimension (C,) or (N, C, d1, ...), "
                         f"got shape {tuple(input.shape)}")
    C = input.shape[1] if input.dim() > 1 else input.shape[0]
    if (input.dim() > 1 and target.dtype == torch.int64 and
            target.shape == input.shape[:1] + input.shape[2:]):
        pass  # the common case, checked cheaply
    elif target.is_floating_point():
        if ignore_index != -100:
            raise ValueError(f"ignore_index={ignore_index} is not supported for floating point "
                             f"(class probability) target, as in PyTorch")
        if target.shape != input.shape:
            raise ValueError(
                f"probability target has shape {tuple(target.shape)} but input has shape "
                f"{tuple(input.shape)}; class probabilities must match the input (class "
                f"indices are an integer tensor of shape {_loss_shape(input, 'none')})")
    else:
        expect = _loss_shape(input, "none") if input.dim() > 1 else ()
        if tuple(target.shape) != expect:
            raise ValueError(
                f"target has shape {tuple(target.shape)} but input has shape "
                f"{tuple(input.shape)} (class dim 1); class-index targets need shape {expect}")
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(f"target has dtype {target.dtype}; pass class indices as int64 "
                            f"or class probabilities as {input.dtype}")
    if weight is not None and tuple(weight.shape) != (C,):
        raise ValueError(f"weight has shape {tuple(weight.shape)} but input has {C} classes; "
                         f"pass one weight per class, shape ({C},)")


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    input : Tensor of float, shape (C,), (N, C) or (N, C, d1, ..., dK)
        Unnormalised logits; the class dim is 1 (0 for an unbatched ``(C,)``).
    target : Tensor
        Class indices (integer, shape of ``input`` without dim 1; ``ignore_index`` allowed)
        or class probabilities (float, ``input``'s shape; differentiable).
    weight : Tensor, shape (C,), optional
        Class weights.
    size_average, reduce
        Deprecated PyTorch arguments (they override ``reduction`` as in PyTorch).
    ignore_index : int, default -100
        Class-index targets with this value contribute nothing and are left out of the mean.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides by the total class weight of the non-ignored targets (class indices)
        or by the number of examples (probabilities), as PyTorch.
    label_smoothing : float in [0, 1], default 0
        ``y' = (1 - eps) y + eps / C``.

    Returns
    -------
    Tensor
        A scalar, or the per-example losses (``input``'s shape without dim 1) for "none",
        in ``input``'s dtype.

    Notes
    -----
    Per example, with ``lse = logsumexp(x)`` and ``w`` the class weights::

        loss = sum_c w_c ((1 - eps) y_c + eps / C) (lse - x_c)

    Differences from PyTorch: a mean over nothing is 0 (PyTorch: NaN).

    Examples
    --------
    >>> import torch, fastxent.torch as fxt
    >>> x = torch.tensor([[2.0, 1.0, 0.1]], requires_grad=True)
    >>> loss = fxt.cross_entropy(x, torch.tensor([0]))
    >>> round(loss.item(), 5)
    0.41703
    >>> loss.backward(); x.grad
    tensor([[-0.3410,  0.2424,  0.0986]])
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    _check_ce_args(input, target, weight, reduction, label_smoothing, ignore_index)
    label_smoothing = float(label_smoothing)
    ignore_index = int(ignore_index)
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if torch.compiler.is_compiling():
        loss, _ = _ce_op(input, target, weight, ignore_index, reduction, label_smoothing,
                         _needs_grad(input))
    elif _needs_grad(input, target if target.is_floating_point() else None):
        loss = _CrossEntropyFn.apply(input, target, weight, ignore_index, reduction,
                                     label_smoothing)
    else:
        loss, _ = _ce_impl(input, target, weight, ignore_index, reduction, label_smoothing,
                           False)
    return loss.squeeze(0) if unbatched and reduction == "none" else loss


def _legacy_reduction(size_average, reduce):
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


# ---------------------------------------------------------------------- sigmoid: the work

def _pos_weight_np(pos_weight, input, dtype):
    if pos_weight is None:
        return None
    C = input.shape[-1] if input.dim() else 1
    if pos_weight.numel() == 1:
        return float(pos_weight.reshape(()).item())
    if pos_weight.dim() == 1 and pos_weight.shape[0] == C:
        return _np(pos_weight, dtype)
    raise ValueError(f"pos_weight has shape {tuple(pos_weight.shape)}; fastxent.torch takes a "
                     f"scalar or one weight per class along the last dim of input, shape "
                     f"({C},)")


def _bce_args(input, target, weight, pos_weight, reduction):
    for t, n in ((input, "input"), (target, "target"), (weight, "weight"),
                 (pos_weight, "pos_weight")):
        _check_cpu(t, n)
    cdt = _compute_dtype(input)
    x = _np(input, cdt)
    y = _np(target, cdt)
    w = None if weight is None else _np(torch.broadcast_to(weight, input.shape), cdt)
    pw = _pos_weight_np(pos_weight, input, cdt)
    # PyTorch's weighted mean is mean(w l): a sum scaled by 1 / numel
    red, scale = reduction, 1.0
    if reduction == "mean" and w is not None:
        red, scale = "sum", 1.0 / max(input.numel(), 1)
    return cdt, x, y, w, pw, red, scale


def _bce_impl(input, target, weight, pos_weight, reduction, need_grad):
    cdt, x, y, w, pw, red, scale = _bce_args(input, target, weight, pos_weight, reduction)
    obj = SigmoidCrossEntropy(pos_weight=pw, reduction=red)
    if need_grad:
        loss, grad = obj.loss_gradient(y, x, sample_weight=w,
                                       grad_loss=None if red == "none" else scale)
        grad = _tensor(grad, input.dtype)
    else:
        loss, grad = obj.loss(y, x, sample_weight=w), None
    if scale != 1.0:
        loss = loss * scale
    return _tensor(np.asarray(loss, dtype=x.dtype), input.dtype), grad


def _bce_target_grad_impl(input, target, weight, pos_weight, grad_output, reduction):
    cdt, x, y, w, pw, red, scale = _bce_args(input, target, weight, pos_weight, reduction)
    obj = SigmoidCrossEntropy(pos_weight=pw, reduction=red)
    go = _np(grad_output, cdt)
    if red == "none":
        g = obj.labels_gradient(None, x, sample_weight=w,
                                grad_loss=np.broadcast_to(go, x.shape))
    else:
        g = obj.labels_gradient(None, x, sample_weight=w, grad_loss=float(go) * scale)
    return _tensor(g, input.dtype)


class _BCEFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, target, weight, pos_weight, reduction):
        loss, grad = _bce_impl(input, target, weight, pos_weight, reduction,
                               ctx.needs_input_grad[0])
        ctx.reduction = reduction
        _keep_for_backward(ctx, grad, input, lambda: _bce_impl(
            input, target, weight, pos_weight, reduction, True)[1])
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(input, target, weight, pos_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = _bce_scale(_hand_over(ctx), grad_output, ctx.reduction, eager=True)
        if ctx.needs_input_grad[1]:
            input, target, weight, pos_weight = ctx.saved_tensors
            gy = _bce_target_grad_impl(input, target, weight, pos_weight, grad_output,
                                       ctx.reduction)
        return gx, gy, None, None, None


def _bce_scale(grad, grad_output, reduction, eager):
    if reduction == "none":
        return grad * grad_output
    if eager and grad_output.item() == 1.0:
        return grad
    return grad * grad_output


@torch.library.custom_op("fastxent::bce_with_logits", mutates_args=())
def _bce_op(input: Tensor, target: Tensor, weight: Optional[Tensor],
            pos_weight: Optional[Tensor], reduction: str,
            need_grad: bool) -> tuple[Tensor, Tensor]:
    loss, grad = _bce_impl(input, target, weight, pos_weight, reduction, need_grad)
    return loss, (grad if grad is not None else input.new_empty(0))


@_bce_op.register_fake
def _(input, target, weight, pos_weight, reduction, need_grad):
    loss = input.new_empty(tuple(input.shape) if reduction == "none" else ())
    grad = (torch.empty_like(input, memory_format=torch.contiguous_format) if need_grad
            else input.new_empty(0))
    return loss, grad


@torch.library.custom_op("fastxent::bce_with_logits_target_grad", mutates_args=())
def _bce_target_grad_op(input: Tensor, target: Tensor, weight: Optional[Tensor],
                        pos_weight: Optional[Tensor], grad_output: Tensor,
                        reduction: str) -> Tensor:
    return _bce_target_grad_impl(input, target, weight, pos_weight, grad_output, reduction)


@_bce_target_grad_op.register_fake
def _(input, target, weight, pos_weight, grad_output, reduction):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _bce_setup(ctx, inputs, output):
    input, target, weight, pos_weight, reduction, _ = inputs
    ctx.reduction = reduction
    ctx.save_for_backward(output[1], input, target, weight, pos_weight)


def _bce_backward(ctx, grad_loss, _grad_grad):
    grad, input, target, weight, pos_weight = ctx.saved_tensors
    gx = gy = None
    if ctx.needs_input_grad[0]:
        gx = _bce_scale(grad, grad_loss, ctx.reduction, eager=False)
    if ctx.needs_input_grad[1]:
        gy = _bce_target_grad_op(input, target, weight, pos_weight, grad_loss, ctx.reduction)
    return gx, gy, None, None, None, None


_bce_op.register_autograd(_bce_backward, setup_context=_bce_setup)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None):
    """Sigmoid cross-entropy, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Parameters
    ----------
    input : Tensor of float, any shape
        Logits.
    target : Tensor, ``input``'s shape
        Targets in [0, 1] (differentiable).
    weight : Tensor, optional
        Broadcast to ``input``'s shape; multiplies each element's loss.
    size_average, reduce
        Deprecated PyTorch arguments.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" is ``mean(weight * loss)`` over every element, as PyTorch.
    pos_weight : Tensor, optional
        Weight of the positive term: a scalar or one value per class (the last dim).

    Returns
    -------
    Tensor

    Notes
    -----
    ``loss = (1 - z) softplus(x) + pos_weight z softplus(-x)``, computed stably.

    Examples
    --------
    >>> import torch, fastxent.torch as fxt
    >>> fxt.binary_cross_entropy_with_logits(torch.zeros(2), torch.tensor([1.0, 0.0]))
    tensor(0.6931)
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    _check_reduction(reduction)
    if target.shape != input.shape:
        raise ValueError(f"Target size ({tuple(target.shape)}) must be the same as input size "
                         f"({tuple(input.shape)})")
    if weight is not None:
        try:
            torch.broadcast_shapes(weight.shape, input.shape)
        except RuntimeError:
            raise ValueError(f"weight has shape {tuple(weight.shape)}, which does not "
                             f"broadcast to input's shape {tuple(input.shape)}") from None
    if input.dim() == 0:
        loss = binary_cross_entropy_with_logits(
            input.reshape(1), target.reshape(1), None if weight is None else weight.reshape(1),
            reduction=reduction, pos_weight=pos_weight)
        return loss.reshape(()) if reduction == "none" else loss
    if torch.compiler.is_compiling():
        loss, _ = _bce_op(input, target, weight, pos_weight, reduction, _needs_grad(input))
        return loss
    if _needs_grad(input, target):
        return _BCEFn.apply(input, target, weight, pos_weight, reduction)
    return _bce_impl(input, target, weight, pos_weight, reduction, False)[0]


# ---------------------------------------------------------------- linear + cross-entropy

@functools.lru_cache(maxsize=64)
def _linear_loss(prob, ignore_index, label_smoothing, reduction, class_weight=None):
    from .linear import LinearSoftmaxCrossEntropy
    obj = LinearSoftmaxCrossEntropy(ignore_index=None if prob else ignore_index,
                                    label_smoothing=label_smoothing,
                                    class_weight=class_weight, reduction=reduction)
    obj._opts.names = _NAMES
    return obj


_WRT = ("inputs", "weight", "bias")


def _lce_arrays(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                label_smoothing):
    for t, n in ((input, "input"), (linear_weight, "linear_weight"), (target, "target"),
                 (linear_bias, "linear_bias"), (weight, "weight")):
        _check_cpu(t, n)
    cdt = _compute_dtype(input)
    prob = target.is_floating_point()
    args = (_np(target, cdt) if prob else _np(target), _np(input, cdt),
            _np(linear_weight, cdt), None if linear_bias is None else _np(linear_bias, cdt))
    if weight is None:
        obj = _linear_loss(prob, ignore_index, label_smoothing, reduction)
    else:
        obj = _linear_loss.__wrapped__(prob, ignore_index, label_smoothing, reduction,
                                       _np(weight, cdt))
    return obj, args


def _lce_grads(grads, like, want):
    """The gradients as tensors in their parameters' dtypes (None where not wanted)."""
    return tuple(None if g is None or not w else _tensor(g, t.dtype)
                 for g, t, w in zip(grads, like, want))


def _lce_impl(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
              label_smoothing, want):
    """Forward of linear_cross_entropy on 2-D input. ``want``: (input, weight, bias) grads.

    Reduced losses: ``(loss, (gx, gw, gb))`` in one fused pass (for a unit upstream
    gradient). ``"none"``: ``(loss, lse)``, the per-row logsumexp for the backward pass."""
    obj, (t, x, W, b) = _lce_arrays(input, linear_weight, target, linear_bias, weight,
                                    ignore_index, reduction, label_smoothing)
    if reduction == "none" or not any(want):
        lse = np.empty(x.shape[0], x.dtype) if reduction == "none" else None
        loss = obj.loss(t, x, W, b, lse_out=lse)
        return _tensor(loss, input.dtype), (None if lse is None else torch.from_numpy(lse))
    wrt = [n for n, w in zip(_WRT, want) if w and (n != "bias" or b is not None)]
    loss, *grads = obj.loss_gradient(t, x, W, b, wrt=wrt)
    return _tensor(loss, input.dtype), _lce_grads(grads, (input, linear_weight, linear_bias),
                                                  want)


def _lce_backward_impl(input, linear_weight, target, linear_bias, weight, lse, grad_output,
                       ignore_index, label_smoothing, want):
    """Backward of reduction="none": each chunk's logits recomputed, one pass with lse."""
    obj, (t, x, W, b) = _lce_arrays(input, linear_weight, target, linear_bias, weight,
                                    ignore_index, "none", label_smoothing)
    wrt = [n for n, w in zip(_WRT, want) if w and (n != "bias" or b is not None)]
    grads = obj.gradient(t, x, W, b, grad_loss=_np(grad_output, _compute_dtype(input)),
                         lse=_np(lse),
                         wrt=wrt)
    return _lce_grads(grads, (input, linear_weight, linear_bias), want)


def _scale_all(grads, grad_output, eager):
    if eager and grad_output.item() == 1.0:
        return grads
    return tuple(None if g is None else g * grad_output for g in grads)


class _LinearCEFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, linear_weight, target, linear_bias, weight, ignore_index,
                reduction, label_smoothing):
        n = ctx.needs_input_grad
        want = (n[0], n[1], n[3])
        loss, saved = _lce_impl(input, linear_weight, target, linear_bias, weight,
                                ignore_index, reduction, label_smoothing, want)
        ctx.options = (want, reduction, ignore_index, label_smoothing)
        if reduction == "none":
            ctx.save_for_backward(input, linear_weight, target, linear_bias, weight, saved)
        else:
            # the parameters are leaves: hand the gradients over (no clone into .grad);
            # another backward pass recomputes them (the inputs are small: N x D, C x D)
            ctx.grads = saved
            ctx.recompute = lambda: _lce_impl(input, linear_weight, target, linear_bias,
                                              weight, ignore_index, reduction,
                                              label_smoothing, want)[1]
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        want, reduction, ignore_index, eps = ctx.options
        if reduction == "none":
            input, W, target, b, weight, lse = ctx.saved_tensors
            gx, gw, gb = _lce_backward_impl(input, W, target, b, weight, lse, grad_output,
                                            ignore_index, eps, want)
        else:
            grads = ctx.grads if ctx.grads is not None else ctx.recompute()
            ctx.grads = None
            gx, gw, gb = _scale_all(grads, grad_output, eager=True)
        return gx, gw, None, gb, None, None, None, None


def _empty_or(t, like):
    """A custom op's output: contiguous, as its fake says (the linear engine returns the
    weight gradient Fortran-ordered; the eager route keeps that layout, copy-free)."""
    return like.new_empty(0) if t is None else t.contiguous()


@torch.library.custom_op("fastxent::linear_cross_entropy", mutates_args=())
def _lce_op(input: Tensor, linear_weight: Tensor, target: Tensor,
            linear_bias: Optional[Tensor], weight: Optional[Tensor], ignore_index: int,
            reduction: str, label_smoothing: float, want_input: bool, want_weight: bool,
            want_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    want = (want_input, want_weight, want_bias)
    loss, saved = _lce_impl(input, linear_weight, target, linear_bias, weight, ignore_index,
                            reduction, label_smoothing, want)
    if reduction == "none":
        return loss, saved, input.new_empty(0), input.new_empty(0)
    gx, gw, gb = (None, None, None) if saved is None else saved
    return loss, _empty_or(gx, input), _empty_or(gw, input), _empty_or(gb, input)


@_lce_op.register_fake
def _(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
      label_smoothing, want_input, want_weight, want_bias):
    e = input.new_empty
    if reduction == "none":
        return e(input.shape[:1]), e(input.shape[:1]), e(0), e(0)
    like = torch.empty_like
    return (e(()), like(input) if want_input else e(0),
            like(linear_weight) if want_weight else e(0),
            like(linear_bias) if want_bias and linear_bias is not None else e(0))


@torch.library.custom_op("fastxent::linear_cross_entropy_backward", mutates_args=())
def _lce_backward_op(input: Tensor, linear_weight: Tensor, target: Tensor,
                     linear_bias: Optional[Tensor], weight: Optional[Tensor], lse: Tensor,
                     grad_output: Tensor, ignore_index: int, label_smoothing: float,
                     want_input: bool, want_weight: bool,
                     want_bias: bool) -> tuple[Tensor, Tensor, Tensor]:
    grads = _lce_backward_impl(input, linear_weight, target, linear_bias, weight, lse,
                               grad_output, ignore_index, label_smoothing,
                               (want_input, want_weight, want_bias))
    return tuple(_empty_or(g, input) for g in grads)


@_lce_backward_op.register_fake
def _(input, linear_weight, target, linear_bias, weight, lse, grad_output, ignore_index,
      label_smoothing, want_input, want_weight, want_bias):
    e, like = input.new_empty, torch.empty_like
    return (like(input) if want_input else e(0),
            like(linear_weight) if want_weight else e(0),
            like(linear_bias) if want_bias and linear_bias is not None else e(0))


def _lce_setup(ctx, inputs, output):
    (input, W, target, b, weight, ignore_index, reduction, eps, *want) = inputs
    ctx.options = (tuple(want), reduction, ignore_index, eps, b is not None)
    if reduction == "none":
        ctx.save_for_backward(input, W, target, b, weight, output[1])
    else:
        ctx.save_for_backward(*output[1:])


def _lce_backward(ctx, grad_loss, *_unused):
    want, reduction, ignore_index, eps, has_bias = ctx.options
    if reduction == "none":
        input, W, target, b, weight, lse = ctx.saved_tensors
        grads = _lce_backward_op(input, W, target, b, weight, lse, grad_loss, ignore_index,
                                 eps, *want)
    else:
        grads = _scale_all(ctx.saved_tensors, grad_loss, eager=False)
    gx, gw, gb = (g if w else None for g, w in zip(grads, want))
    if not has_bias:
        gb = None
    return gx, gw, None, gb, None, None, None, None, None, None, None


_lce_op.register_autograd(_lce_backward, setup_context=_lce_setup)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Cross-entropy of ``input @ linear_weight.T + linear_bias`` without the logits, as
    ``torch.nn.functional.linear_cross_entropy``.

    The logits are formed a chunk of rows at a time by
    :class:`fastxent.LinearSoftmaxCrossEntropy` and never stored whole: the extra memory is
    one chunk, not ``N x C``. Forward and backward are one fused pass for a reduced loss.

    Parameters
    ----------
    input : Tensor of float, shape (N, D), (D,) or (..., D)
        Features (leading dims are flattened).
    linear_weight : Tensor, shape (C, D)
        The output projection (``nn.Linear(D, C).weight``).
    target : Tensor
        Class indices (integer, ``input``'s leading shape; ``ignore_index`` allowed) or class
        probabilities (float, leading shape + (C,); not differentiable here).
    linear_bias : Tensor, shape (C,), optional
    weight : Tensor, shape (C,), optional
        Class weights.
    reduction : {"mean", "sum", "none"}, default "mean"
    ignore_index : int or None, default -100 (None means -100, as PyTorch)
    label_smoothing : float in [0, 1], default 0

    Returns
    -------
    Tensor
        ``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)``, with
        gradients for ``input``, ``linear_weight`` and ``linear_bias``.

    Examples
    --------
    >>> import torch, fastxent.torch as fxt
    >>> x, w = torch.randn(4, 3), torch.randn(5, 3, requires_grad=True)
    >>> loss = fxt.linear_cross_entropy(x, w, torch.tensor([0, 1, 2, -100]))
    >>> loss.backward(); w.grad.shape
    torch.Size([5, 3])
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing!r} must be in [0, 1]")
    if ignore_index is None:
        ignore_index = -100
    if linear_weight.dim() != 2:
        raise ValueError(f"linear_weight has shape {tuple(linear_weight.shape)}; pass the "
                         f"(C, D) weight of a Linear layer (multi-dim out_features are not "
                         f"supported)")
    if input.dim() == 0 or input.shape[-1] != linear_weight.shape[1]:
        raise ValueError(f"input has shape {tuple(input.shape)} but linear_weight has shape "
                         f"{tuple(linear_weight.shape)}; they must agree on D, the last dim "
                         f"of input")
    prob = target.is_floating_point()
    lead = tuple(input.shape[:-1])
    C = linear_weight.shape[0]
    expect = lead + (C,) if prob else lead
    if tuple(target.shape) != expect:
        raise ValueError(f"target has shape {tuple(target.shape)} but input has shape "
                         f"{tuple(input.shape)} and linear_weight {tuple(linear_weight.shape)};"
                         f" expected {expect} ({'class probabilities' if prob else 'one class'}"
                         f" {'' if prob else 'index '}per row)")
    if prob and target.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError(
            "fastxent.torch.linear_cross_entropy does not differentiate probability targets "
            "(that needs the logits); use fastxent.torch.cross_entropy(F.linear(...), target)")
    x2 = input.reshape(-1, input.shape[-1])
    t2 = target.reshape(-1, C) if prob else target.reshape(-1)
    args = (x2, linear_weight, t2, linear_bias, weight, int(ignore_index), reduction,
            float(label_smoothing))
    need = torch.is_grad_enabled()
    want = (need and x2.requires_grad, need and linear_weight.requires_grad,
            need and linear_bias is not None and linear_bias.requires_grad)
    if torch.compiler.is_compiling():
        loss = _lce_op(*args, *want)[0]
    elif any(want):
        loss = _LinearCEFn.apply(*args)
    else:
        loss = _lce_impl(*args, want)[0]
    return loss.reshape(lead) if reduction == "none" else loss


# --------------------------------------------------------------------------- nn.Modules

class CrossEntropyLoss(nn.Module):
    """``torch.nn.CrossEntropyLoss`` on fastxent (see :func:`cross_entropy`).

    Parameters
    ----------
    weight : Tensor, shape (C,), optional
    size_average, reduce : deprecated, as PyTorch
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float, default 0

    Examples
    --------
    >>> import torch, fastxent.torch as fxt
    >>> loss = fxt.CrossEntropyLoss(label_smoothing=0.1)
    >>> round(loss(torch.tensor([[2.0, 1.0, 0.1]]), torch.tensor([0])).item(), 4)
    0.5003
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)

    def extra_repr(self):
        return (f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")


class BCEWithLogitsLoss(nn.Module):
    """``torch.nn.BCEWithLogitsLoss`` on fastxent (see :func:`binary_cross_entropy_with_logits`).

    Parameters
    ----------
    weight : Tensor, optional
    size_average, reduce : deprecated, as PyTorch
    reduction : {"mean", "sum", "none"}, default "mean"
    pos_weight : Tensor, optional
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.reduction = reduction

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight,
                                                reduction=self.reduction,
                                                pos_weight=self.pos_weight)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class LinearCrossEntropyLoss(nn.Module):
    """``torch.nn.LinearCrossEntropyLoss`` on fastxent: a ``Linear(in_features,
    num_classes)`` head fused with the cross-entropy (see :func:`linear_cross_entropy`).

    Parameters
    ----------
    in_features, num_classes : int
    bias : bool, default False
    device, dtype
        Of the linear layer's parameters (``self.linear``).
    reduction : {"mean", "sum", "none"}, default "mean"
    weight : Tensor, shape (num_classes,), optional
        Class weights.
    ignore_index : int or None, default None (-100)
    label_smoothing : float, default 0
    """

    def __init__(self, in_features, num_classes, *, bias=False, device=None, dtype=None,
                 reduction="mean", weight=None, ignore_index=None, label_smoothing=0.0):
        super().__init__()
        if weight is not None and tuple(weight.shape) != (num_classes,):
            raise ValueError(f"weight has shape {tuple(weight.shape)}; expected "
                             f"({num_classes},), one weight per class")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r} must be in [0, 1]")
        _check_reduction(reduction)
        self.num_classes = num_classes
        self.linear = nn.Linear(in_features, num_classes, bias=bias, device=device,
                                dtype=dtype)
        self.register_buffer("weight", weight)
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return linear_cross_entropy(input, self.linear.weight, target,
                                    linear_bias=self.linear.bias, weight=self.weight,
                                    reduction=self.reduction, ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing)

    def extra_repr(self):
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}")
