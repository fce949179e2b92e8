"""Fused linear + softmax cross-entropy: ``linear_softmax_cross_entropy`` and
``LinearSoftmaxCrossEntropy``, the loss of ``inputs @ weight.T + bias`` computed in row
chunks without ever holding the N x V logits (the machinery is in ``_linear``)."""

from . import _boundary as B
from . import _linear

_NOTES = """
    With ``Z = inputs @ weight.T + bias`` (never materialised beyond one chunk of rows) and
    ``l_i`` the softmax cross-entropy of row ``i`` of ``Z`` with every option of
    :func:`fastxent.softmax_cross_entropy_with_logits` (``logit_softcap`` ``c tanh(z / c)``,
    label smoothing, class weights, z-loss)::

        loss          = reduce_i  sample_weight_i * l_i(Z_i)
        d/d inputs    = G @ weight                 G = d loss / d Z   (N, V), per chunk
        d/d weight    = G.T @ inputs
        d/d bias      = sum_i G_i

    ``"mean"`` divides by the total weight of the examples that count over *all* rows (as
    the plain loss: sample weight times the class weight of the target for integer labels,
    ignored rows 0; a mean over nothing is 0 with zero gradients). Per chunk of ``m`` rows:
    one GEMM for the logits, the fused in-place kernel of the plain loss, one GEMM into the
    chunk's rows of ``d/d inputs`` and one accumulating into ``d/d weight`` (BLAS
    ``beta = 1``); the extra memory is one (m, V) buffer. Results equal the plain loss on
    the materialised logits up to the summation order of the GEMMs.
"""

_PARAMS = """
    labels : array_like
        Integer class indices, shape (N,) (or (N, 1)), or dense (soft) labels, shape (N, V)
        (or (1, V) for every example); dense labels need not sum to 1.
    inputs : array_like of float, shape (N, D)
        The features (a scipy.sparse CSR matrix is accepted: its gradient is dense).
    weight : array_like of float, shape (V, D)
        PyTorch's ``Linear.weight`` layout (C- or Fortran-contiguous read without a copy).
    bias : array_like of float, shape (V,), optional
"""

_OPTIONS = """
    ignore_index : int, optional
        Integer labels equal to it contribute 0 and leave the mean's count.
    label_smoothing, class_weight, z_loss, logit_softcap
        As in :func:`fastxent.softmax_cross_entropy_with_logits`.
    reduction : {"none", "sum", "mean"}, default "mean"
    chunk_size : int, optional
        Rows per chunk; None chooses from the shapes (about 128 rows of a 64k-class
        vocabulary; thousands of rows of a narrow one).
    check, backend, n_threads
        As in :func:`fastxent.softmax_cross_entropy_with_logits` (``n_threads`` is the
        kernels'; the GEMMs run on NumPy's / SciPy's BLAS thread pool).
"""


def _doc(f):
    f.__doc__ = (f.__doc__.replace("    {notes}\n", _NOTES)
                 .replace("    {params}\n", _PARAMS.lstrip("\n"))
                 .replace("    {options}\n", _OPTIONS.lstrip("\n")))
    return f


def _options(ignore_index, label_smoothing, class_weight, z_loss, logit_softcap, reduction,
             check, backend, n_threads):
    return B.Options(label_smoothing, class_weight, z_loss, logit_softcap, ignore_index,
                     reduction, check, backend, n_threads)


@_doc
def linear_softmax_cross_entropy(labels, inputs, weight, bias=None, *, ignore_index=None,
                                 label_smoothing=0.0, class_weight=None, sample_weight=None,
                                 z_loss=0.0, logit_softcap=None, reduction="mean",
                                 chunk_size=None, check=None, backend=None, n_threads=None):
    """Softmax cross-entropy of a linear layer's output, without the N x V logits.

    The loss of ``softmax_cross_entropy(labels, inputs @ weight.T + bias)`` computed in
    chunks of rows: the memory of one chunk's logits instead of all of them.

    Parameters
    ----------
    {params}
    sample_weight : array_like, shape (N,), optional
        Per-example weights.
    {options}

    Returns
    -------
    loss : ndarray of shape (N,) for ``reduction="none"``, else a scalar

    See Also
    --------
    LinearSoftmaxCrossEntropy : the same with gradients (``loss_gradient``).

    Notes
    -----
    {notes}

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> x = np.array([[1.0, 2.0]]); w = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> float(fx.linear_softmax_cross_entropy([1], x, w)) == float(
    ...     fx.sparse_softmax_cross_entropy_with_logits([1], x @ w.T, reduction="mean"))
    True
    """
    opts = _options(ignore_index, label_smoothing, class_weight, z_loss, logit_softcap,
                    reduction, check, backend, n_threads)
    lp = B.linear_problem(labels, inputs, weight, bias, opts, sample_weight=sample_weight)
    return _linear.run(lp, _linear.check_chunk_size(chunk_size), op="forward")[0]


class LinearSoftmaxCrossEntropy:
    """Fused linear + softmax cross-entropy as a loss object (options checked once).

    ``loss_gradient`` returns the loss and its gradients with respect to the linear layer's
    inputs, weight and bias, computed chunk by chunk (see
    :func:`linear_softmax_cross_entropy`).

    Parameters
    ----------
    {options}

    Notes
    -----
    {notes}

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> rng = np.random.default_rng(0)
    >>> x, w, b = rng.normal(size=(6, 4)), rng.normal(size=(5, 4)), np.zeros(5)
    >>> loss, gx, gw, gb = fx.LinearSoftmaxCrossEntropy().loss_gradient([0, 1, 2, 3, 4, 0],
    ...                                                                 x, w, b)
    >>> gx.shape, gw.shape, gb.shape
    ((6, 4), (5, 4), (5,))
    >>> g = fx.SparseSoftmaxCrossEntropy().gradient([0, 1, 2, 3, 4, 0], x @ w.T + b)
    >>> bool(np.allclose(gw, g.T @ x) and np.allclose(gx, g @ w))
    True
    """

    def __init__(self, *, ignore_index=None, label_smoothing=0.0, class_weight=None,
                 z_loss=0.0, logit_softcap=None, reduction="mean", chunk_size=None,
                 check=None, backend=None, n_threads=None):
        self._opts = _options(ignore_index, label_smoothing, class_weight, z_loss,
                              logit_softcap, reduction, check, backend, n_threads)
        self.ignore_index = self._opts.ignore_index
        self.label_smoothing = self._opts.eps
        self.class_weight = class_weight
        self.z_loss = self._opts.z
        self.logit_softcap = logit_softcap if logit_softcap is None else self._opts.softcap
        self.reduction = self._opts.reduction
        self.chunk_size = _linear.check_chunk_size(chunk_size)
        self.check = self._opts.check
        self.backend = self._opts.backend
        self.n_threads = self._opts.n_threads

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k[0] != "_")
        return f"{type(self).__name__}({args})"

    def loss(self, labels, inputs, weight, bias=None, sample_weight=None, loss_out=None,
             lse_out=None):
        """The loss (forward only: one GEMM and the loss kernel per chunk).

        Parameters
        ----------
        labels, inputs, weight, bias, sample_weight
            As for :func:`linear_softmax_cross_entropy`.
        loss_out : ndarray, optional
            Receives the loss: shape (N,) for ``reduction="none"``, else 0-d.
        lse_out : ndarray, shape (N,), optional
            Receives each row's logsumexp, for a later :meth:`gradient` with ``lse=``.

        Returns
        -------
        loss : ndarray of shape (N,) or scalar
        """
        lp = B.linear_problem(labels, inputs, weight, bias, self._opts,
                              sample_weight=sample_weight, loss_out=loss_out, lse_out=lse_out)
        return _linear.run(lp, self.chunk_size, op="forward")[0]

    def __call__(self, labels, inputs, weight, bias=None, sample_weight=None, **outputs):
        """The same as :meth:`loss`."""
        return self.loss(labels, inputs, weight, bias, sample_weight, **outputs)

    def loss_gradient(self, labels, inputs, weight, bias=None, sample_weight=None,
                      grad_loss=None, loss_out=None, grad_inputs_out=None,
                      grad_weight_out=None, grad_bias_out=None, lse_out=None, wrt=None):
        """``(loss, grad_inputs, grad_weight, grad_bias)`` in one pass over the chunks.

        Parameters
        ----------
        labels, inputs, weight, bias, sample_weight, loss_out, lse_out
            As for :meth:`loss`.
        grad_loss : float or array_like of shape (N,), optional
            The upstream gradient: a scalar for a reduced loss, one value per example for
            ``reduction="none"`` (the gradients are then those of ``sum_i grad_loss_i
            loss_i``).
        grad_inputs_out, grad_weight_out, grad_bias_out : ndarray, optional
            Receive the gradients (shapes of inputs, weight, bias; float32 or float64). A
            Fortran-ordered ``grad_weight_out`` (e.g. ``np.empty((D, V)).T``) is accumulated
            in place when there is no bias gradient; a C-ordered one gets the result copied
            in (a transposing copy of V x D values).
        wrt : str or sequence of {"inputs", "weight", "bias"}, optional
            The gradients to compute (default all); the others are returned as None and
            their GEMMs skipped (without "inputs": two GEMMs per chunk instead of three).

        Returns
        -------
        loss : ndarray of shape (N,) or scalar
        grad_inputs : ndarray, shape (N, D), or None
        grad_weight : ndarray, shape (V, D), or None
            Fortran-ordered unless ``grad_weight_out`` says otherwise: BLAS accumulates it
            fastest that way (``np.ascontiguousarray`` gives a C-ordered copy).
        grad_bias : ndarray, shape (V,), or None (also without a bias)
        """
        lp = B.linear_problem(labels, inputs, weight, bias, self._opts,
                              sample_weight=sample_weight, grad_loss=grad_loss,
                              loss_out=loss_out, grad_inputs_out=grad_inputs_out,
                              grad_weight_out=grad_weight_out, grad_bias_out=grad_bias_out,
                              lse_out=lse_out)
        return _linear.run(lp, self.chunk_size, op="fused", wrt=_linear.check_wrt(wrt))

    def gradient(self, labels, inputs, weight, bias=None, sample_weight=None, grad_loss=None,
                 lse=None, grad_inputs_out=None, grad_weight_out=None, grad_bias_out=None,
                 wrt=None):
        """``(grad_inputs, grad_weight, grad_bias)`` without the loss.

        A backward pass after :meth:`loss` (e.g. an autograd function that learns the
        per-example ``grad_loss`` of ``reduction="none"`` only then): the logits of each
        chunk are recomputed (one GEMM) and, with ``lse`` saved by ``loss(...,
        lse_out=...)``, turned into the gradient in one pass.

        Parameters
        ----------
        labels, inputs, weight, bias, sample_weight, grad_loss, wrt
            As for :meth:`loss_gradient`.
        lse : array_like of shape (N,), optional
            The logsumexp saved by :meth:`loss` (``lse_out``) for the same arguments.
        grad_inputs_out, grad_weight_out, grad_bias_out : ndarray, optional
            As for :meth:`loss_gradient`.

        Returns
        -------
        grad_inputs, grad_weight, grad_bias : ndarray or None
        """
        lp = B.linear_problem(labels, inputs, weight, bias, self._opts,
                              sample_weight=sample_weight, grad_loss=grad_loss,
                              grad_inputs_out=grad_inputs_out,
                              grad_weight_out=grad_weight_out, grad_bias_out=grad_bias_out,
                              lse=lse)
        return _linear.run(lp, self.chunk_size, op="backward", wrt=_linear.check_wrt(wrt))[1:]
