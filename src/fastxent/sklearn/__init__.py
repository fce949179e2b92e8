"""scikit-learn integration: :class:`SoftmaxRegression`, :func:`log_loss`, and the loss protocol.

Needs the optional extra: ``pip install "fastxent[sklearn]"`` (scikit-learn and scipy);
``import fastxent`` alone never imports them.

:class:`SoftmaxRegression`
    Multinomial logistic regression (``LogisticRegression``'s model and objective) trained
    with fastxent's fused loss-and-gradient kernels, by L-BFGS or by a Hessian-free Newton
    method on ``hessp``.
:func:`log_loss`
    ``sklearn.metrics.log_loss``, plus ``from_logits=True`` computed stably from logits.

Loss objects for estimators written against ``sklearn._loss``
--------------------------------------------------------------
fastxent's loss objects (:class:`fastxent.SparseSoftmaxCrossEntropy`,
:class:`fastxent.SoftmaxCrossEntropy`, :class:`fastxent.SigmoidCrossEntropy`) follow
scikit-learn's private loss protocol (``sklearn._loss.loss.BaseLoss``, e.g.
``HalfMultinomialLoss`` and ``HalfBinomialLoss``) closely enough that an estimator can
switch by renaming arguments. For ``loss = SparseSoftmaxCrossEntropy(reduction="none",
n_threads=k)`` in place of ``HalfMultinomialLoss(n_classes=C)``:

* ``y_true`` (class indices as floats, shape (n,)) -> ``labels`` (integers, or whole-number
  floats, accepted as they are).
* ``raw_prediction`` (n, C) -> ``logits`` (n, C) (any class ``axis`` is accepted).
* per-sample results -> ``reduction="none"`` (``"mean"`` and ``"sum"`` reduce inside, with
  the gradient scaled to match).
* ``loss(y_true, raw, sample_weight, loss_out, n_threads)`` ->
  ``loss(labels, logits, sample_weight, loss_out=loss_out)``.
* ``gradient(y_true, raw, sample_weight, gradient_out, n_threads)`` ->
  ``gradient(labels, logits, sample_weight, gradient_out=gradient_out)``.
* ``loss_gradient(y_true, raw, sample_weight, loss_out, gradient_out, n_threads)`` ->
  ``loss_gradient(labels, logits, sample_weight, loss_out=..., gradient_out=...)``.
* ``gradient_hessian(y_true, raw, sample_weight, gradient_out, hessian_out, n_threads)`` ->
  ``gradient_hessian(labels, logits, sample_weight, gradient_out, hessian_out)``: the
  gradient and the *diagonal* of each row's Hessian, as scikit-learn returns it
  (an engine operation).
* the full Hessian through products (``LinearModelLoss.gradient_hessian_product``) ->
  ``hessp(labels, logits, v, sample_weight)``.
* ``n_threads=`` per call -> ``n_threads=`` (and ``backend=``) on the loss object.
* ``HalfMultinomialLoss.predict_proba(raw)`` -> :func:`fastxent.softmax` (``out=`` for in
  place).
* ``HalfBinomialLoss`` with ``y_true`` in {0, 1}, raw shape (n,) -> ``SigmoidCrossEntropy``
  with ``labels`` in [0, 1] and logits of shape (n, 1).
* ``sample_weight`` multiplies the per-sample values in both.

Both compute the full cross-entropy (scikit-learn's "half" refers to half the deviance: the
values are the same). With ``reduction="none"`` the values, gradients and diagonal Hessians
are elementwise equal to scikit-learn's (tested in ``tests/test_sklearn_loss_protocol.py``),
and out buffers are filled in place in the same way. What fastxent adds: float32 throughout,
label smoothing, class weights, z-loss, ``ignore_index``, soft labels, the in-place gradient
(``gradient_out=logits``), and multi-threaded kernels.
"""

from ._estimator import SoftmaxRegression
from ._metrics import log_loss

__all__ = ["SoftmaxRegression", "log_loss"]
