"""Linear probes on frozen features: the scikit-learn reference and a fast full-batch torch solver.

Both minimise the same objective, scikit-learn's ``LogisticRegression``:
``0.5 * ||W||^2 + C * sum_i loss_i`` (intercept not penalised), with ``loss`` the binary log-loss of
each class separately (``"ovr"``, one-vs-rest multi-label) or the softmax cross-entropy
(``"multinomial"``); ``"ridge"`` is ``Ridge(alpha)``, solved in closed form. The torch solver runs
L-BFGS on the whole feature matrix at once (on the GPU when there is one), which is where its
speed comes from. A fitted probe is a :class:`ProbeHead` that can be saved and applied later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..heads import KINDS, ProbeHead

logger = logging.getLogger(__name__)


def _check(kind: str, x: np.ndarray, y: np.ndarray, num_outputs: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"probe kind must be one of {KINDS}, not {kind!r}")
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features {list(x.shape)} and labels {list(y.shape)} do not match")
    if kind == "multinomial" and (y.ndim != 1 or y.min() < 0 or y.max() >= num_outputs):
        raise ValueError(
            f"multinomial probe needs class indices in [0, {num_outputs}), got shape {list(y.shape)}"
        )
    if kind != "multinomial" and (y.ndim != 2 or y.shape[1] != num_outputs):
        raise ValueError(f"{kind} probe needs labels [N, {num_outputs}], got {list(y.shape)}")


def fit_sklearn(
    kind: str, x, y, class_names: Sequence[str], c: float = 1.0, seed: int = 2022, max_iter: int = 2000
) -> ProbeHead:
    """The release's probe: ``LogisticRegression(solver="sag", C=c, max_iter=2000)`` (one-vs-rest for
    multi-label) or ``Ridge(alpha=c)``."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    x, y = np.asarray(x, np.float64), np.asarray(y)
    k = len(class_names)
    _check(kind, x, y, k)
    if kind == "ridge":
        reg = Ridge(alpha=c).fit(x, y)
        return ProbeHead(kind, reg.coef_, reg.intercept_, class_names, meta={"solver": "sklearn", "alpha": c})
    clf = LogisticRegression(random_state=seed, max_iter=max_iter, C=c, solver="sag")
    w, b = np.zeros((k, x.shape[1])), np.zeros(k)
    if kind == "ovr":
        ovr = OneVsRestClassifier(clf).fit(x, y)
        for j, est in enumerate(ovr.estimators_):
            if hasattr(est, "coef_"):
                w[j], b[j] = est.coef_[0], est.intercept_[0]
            else:  # a class constant in the training labels: scikit-learn predicts the constant
                b[j] = 20.0 if float(np.ravel(est.y_)[0]) > 0 else -20.0
    else:
        clf.fit(x, y)
        b[:] = -1e4  # classes never seen in training are never predicted
        rows = np.asarray(clf.classes_, dtype=np.int64)
        if len(rows) == 2:  # scikit-learn stores one row for two classes: logit of the second
            w[rows[1]], b[rows[0]], b[rows[1]] = clf.coef_[0], 0.0, clf.intercept_[0]
        else:
            w[rows], b[rows] = clf.coef_, clf.intercept_
    return ProbeHead(kind, w, b, class_names, meta={"solver": "sklearn", "C": c})


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit_torch(
    kind: str,
    x,
    y,
    class_names: Sequence[str],
    c: float = 1.0,
    device: str | torch.device | None = None,
    max_iter: int = 500,
    tol: float = 1e-5,
) -> ProbeHead:
    """Same objective as :func:`fit_sklearn`, minimised with full-batch float32 L-BFGS; ``tol`` bounds
    the largest gradient entry of the objective divided by ``C * n`` (the mean loss)."""
    device = torch.device(device) if device is not None else default_device()
    dtype = torch.float32
    x_np, y_np = np.asarray(x), np.asarray(y)
    k = len(class_names)
    _check(kind, x_np, y_np, k)
    xt = torch.as_tensor(x_np, dtype=dtype, device=device)
    n, d = xt.shape
    if kind == "ridge":
        yt = torch.as_tensor(y_np, dtype=dtype, device=device)
        xm, ym = xt.mean(0), yt.mean(0)
        xc = xt - xm
        w = torch.linalg.solve(xc.T @ xc + c * torch.eye(d, dtype=dtype, device=device), xc.T @ (yt - ym)).T
        b = ym - w @ xm
        return ProbeHead(
            kind, w.cpu().numpy(), b.cpu().numpy(), class_names, meta={"solver": "torch", "alpha": c}
        )
    if kind == "ovr":
        yt = torch.as_tensor(y_np > 0, dtype=dtype, device=device)

        def data_loss(z):  # sum over classes of the mean binary log-loss
            return torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="sum") / n
    else:
        yt = torch.as_tensor(y_np, dtype=torch.long, device=device)

        def data_loss(z):
            return torch.nn.functional.cross_entropy(z, yt)

    w = torch.zeros(k, d, dtype=dtype, device=device, requires_grad=True)
    b = torch.zeros(k, dtype=dtype, device=device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tol,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )
    reg = 1.0 / (2 * c * n)  # scikit-learn's objective divided by C * n

    def closure():
        opt.zero_grad()
        loss = data_loss(xt @ w.T + b) + reg * (w * w).sum()
        loss.backward()
        return loss

    # small CPU problems: thread hand-offs cost more than the matmuls (and the CPU may be shared)
    small = device.type == "cpu" and n * d * k < 20_000_000
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if small else threads)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return ProbeHead(
        kind,
        w.detach().cpu().numpy(),
        b.detach().cpu().numpy(),
        class_names,
        meta={"solver": "torch", "C": c},
    )


@dataclass
class LinearProbe:
    """A probe recipe: ``kind`` + regularisation (``c`` = C, or alpha for ridge) + ``solver``."""

    kind: str
    c: float
    solver: str = "torch"  # "torch" (fast) | "sklearn" (reference)
    device: str | None = None
    seed: int = 2022

    def fit(self, x, y, class_names: Sequence[str]) -> ProbeHead:
        if self.solver == "sklearn":
            return fit_sklearn(self.kind, x, y, class_names, c=self.c, seed=self.seed)
        if self.solver == "torch":
            return fit_torch(self.kind, x, y, class_names, c=self.c, device=self.device)
        raise ValueError(f"probe solver must be 'torch' or 'sklearn', not {self.solver!r}")
