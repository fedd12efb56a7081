"""Small exact solvers on the K×K Gramian ``M = G Gᵀ`` (float64 NumPy, K ≤ a few hundred).

Every Gramian method finds task weights ``w`` from ``M`` alone; the update is ``wᵀG``. The problems
are tiny, so they are solved exactly rather than with a general convex solver:

* quadratic programs over the simplex or a box become non-negative least squares
  (Lawson–Hanson active set, :func:`scipy.optimize.nnls`) on a square-root factor of ``M``;
* the Nash-MTL and FairGrad conditions ``M w = w^(-1/α)`` are the stationarity conditions of a
  strictly convex function of K variables, minimised by a damped Newton method.

Gramians are normalised by their mean diagonal first: every method here is invariant to a global
rescaling of the gradients (or scales its weights back explicitly), so solutions do not depend on
whether gradients are of size 1e-8 or 1e8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from scipy.optimize import brentq, nnls

_controller = None


@contextlib.contextmanager
def single_thread_blas(k: int) -> Iterator[None]:
    """Run tiny LAPACK calls on one BLAS thread: multi-threaded ``eigh`` of a 32×32 matrix can take
    milliseconds on a busy machine instead of microseconds."""
    global _controller
    if k < 16:
        yield
        return
    try:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        with _controller.limit(limits=1, user_api="blas"):
            yield
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield


def scale_of(M: np.ndarray) -> float:
    """Mean diagonal of a Gramian (the mean squared gradient norm); 0 for an all-zero matrix."""
    d = float(np.trace(M)) / max(1, M.shape[0])
    return d if np.isfinite(d) and d > 0 else 0.0


def normalized(M: np.ndarray) -> tuple[np.ndarray, float]:
    """``(M / s, s)`` with ``s`` = mean diagonal (``(M, 0)`` when ``M`` is zero)."""
    s = scale_of(M)
    if s == 0.0:
        return np.zeros_like(M), 0.0
    Mn = (M + M.T) / (2.0 * s)
    return Mn, s


def psd_factor(M: np.ndarray) -> np.ndarray:
    """A square matrix ``A`` with ``AᵀA = M`` for a symmetric PSD ``M`` (eigenvalues below zero
    from rounding are clipped)."""
    k = M.shape[0]
    with single_thread_blas(k):
        lam, V = np.linalg.eigh(M)
    lam = np.clip(lam, 0.0, None)
    return np.sqrt(lam)[:, None] * V.T


def min_norm_simplex(M: np.ndarray, A: np.ndarray | None = None) -> np.ndarray:
    """``argmin_{w ∈ Δ} wᵀMw`` — the minimum-norm point of the convex hull of the rows of ``G``.

    Exact through the reduction ``min_{u ≥ 0} ‖A u‖² + (1ᵀu − 1)²`` (a non-negative least squares
    problem, ``AᵀA = M``): for ``u = t·w`` with ``w`` in the simplex the optimal ``t`` gives the
    value ``q/(1+q)`` with ``q = wᵀMw``, increasing in ``q``; hence ``w = u*/Σu*``.
    """
    k = M.shape[0]
    if k == 1:
        return np.ones(1)
    if A is None:
        A = psd_factor(M)
    C = np.vstack([A, np.ones((1, k))])
    d = np.zeros(C.shape[0])
    d[-1] = 1.0
    u, _ = nnls(C, d, maxiter=50 * k)
    s = u.sum()
    if not np.isfinite(s) or s <= 0:
        return np.full(k, 1.0 / k)
    return u / s


def min_norm_simplex_shifted(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``argmin_{w ∈ Δ} ‖A w − y‖²`` (the point of the hull of A's columns nearest to ``y``)."""
    k = A.shape[1]
    if k == 1:
        return np.ones(1)
    B = A - y[:, None]  # Σ w_k (a_k − y) = A w − y on the simplex
    C = np.vstack([B, np.ones((1, k))])
    d = np.zeros(C.shape[0])
    d[-1] = 1.0
    u, _ = nnls(C, d, maxiter=50 * k)
    s = u.sum()
    return u / s if s > 0 else np.full(k, 1.0 / k)


def project_dual_cone(A: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``argmin_{v ≥ u} vᵀMv`` (``M = AᵀA``): the weights of the projection of ``Gᵀu`` onto the
    dual cone ``{x : Gx ≥ 0}`` (Proposition 1 of Quinton & Rey, 2024). With ``v = u + z``, ``z ≥ 0``
    it is the non-negative least squares problem ``min ‖A z + A u‖``."""
    k = A.shape[1]
    z, _ = nnls(A, -(A @ u), maxiter=50 * k)
    return u + z


def power_weights(
    M: np.ndarray,
    p: float,
    start: np.ndarray | None = None,
    reg: float = 1e-9,
    tol: float = 1e-10,
    max_iter: int = 200,
) -> np.ndarray:
    """The ``w > 0`` solving ``(M + reg·I) w = w^(-p)`` (element-wise) for a PSD ``M``, ``p > 0``.

    It is the minimiser of the strictly convex ``f(w) = ½wᵀ(M + reg·I)w − Σ φ(w_k)`` with
    ``φ'(w) = w^(-p)`` (``φ = log`` for ``p = 1``: self-concordant). Damped Newton — step
    ``1/(1+λ)`` with ``λ`` the Newton decrement, full steps once ``λ < 1/4`` (quadratic
    convergence), a fraction-to-the-boundary safeguard — started from the best multiple of 1
    (``c·1`` with ``c^(1+p)·1ᵀM1 = K``, exact at the solution when it is constant) or ``start``.
    ``reg`` keeps the solution finite when the gradients are linearly dependent.
    """
    k = M.shape[0]
    Mr = M + reg * np.eye(k)
    if (
        start is not None
        and start.shape == (k,)
        and np.all(np.isfinite(start))
        and np.all(start > 0)
    ):
        w = np.asarray(start, dtype=float).copy()
    else:
        total = max(float(Mr.sum()), reg * k)
        w = np.full(k, (k / total) ** (1.0 / (1.0 + p)))
    log = abs(p - 1.0) < 1e-12
    absM = np.abs(Mr)
    for _ in range(max_iter):
        d1 = 1.0 / w if log else w ** (-p)
        g = Mr @ w - d1
        # converged to the precision the terms allow (Mw can cancel: opposite gradients)
        if np.all(np.abs(g) <= tol * (absM @ w + d1)):
            break
        H = Mr + np.diag(p * d1 / w)
        try:
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            step = -g / np.diag(H)
        lam = float(np.sqrt(max(-(g @ step), 0.0)))
        t = 1.0 if lam < 0.25 else 1.0 / (1.0 + lam)
        neg = step < 0
        if neg.any():
            t = min(t, 0.99 * float(np.min(-w[neg] / step[neg])))
        w = w + t * step
    return w


def cagrad_weights(Mn: np.ndarray, c: float) -> tuple[np.ndarray, float, float]:
    """CAGrad's inner problem on a normalised Gramian, solved exactly.

    ``min_{w ∈ Δ} F(w) = g_wᵀ g_0 + c‖g_0‖·‖g_w‖`` with ``g_w = Gᵀw``, ``g_0 = Gᵀ1/K``. Using
    ``‖x‖ = min_{r>0} ‖x‖²/(2r) + r/2``, for fixed ``r`` the problem is the nearest point of the
    hull to ``y = −(r/s)·ḡ`` (``s = c‖g_0‖``), an NNLS problem; the optimal ``r`` is the root of
    ``‖g_{w(r)}‖ = r`` on ``[min-norm, max-norm]``, found by Brent's method.

    Returns ``(w, ‖g_w‖, ‖g_0‖)``.
    """
    k = Mn.shape[0]
    A = psd_factor(Mn)
    gbar = A @ np.full(k, 1.0 / k)
    g0 = float(np.linalg.norm(gbar))
    s = c * g0
    if k == 1:
        return np.ones(1), float(np.linalg.norm(A[:, 0])), g0
    if s <= 0:
        w = np.full(k, 1.0 / k)
        return w, float(np.linalg.norm(A @ w)), g0

    def w_of(r: float) -> np.ndarray:
        return min_norm_simplex_shifted(A, -(r / s) * gbar)

    def psi(r: float) -> float:
        return float(np.linalg.norm(A @ w_of(r))) - r

    lo = float(np.linalg.norm(A @ min_norm_simplex(Mn, A)))
    hi = float(np.max(np.linalg.norm(A, axis=0))) * (1 + 1e-9) + 1e-15
    lo = max(lo, 1e-12 * hi)
    if psi(lo) <= 0:
        r = lo
    elif psi(hi) >= 0:
        r = hi
    else:
        r = brentq(psi, lo, hi, xtol=1e-13 * hi, rtol=1e-12, maxiter=200)
    w = w_of(r)
    return w, float(np.linalg.norm(A @ w)), g0


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (Duchi et al., 2008)."""
    k = v.shape[0]
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    ind = np.arange(1, k + 1)
    cond = u - css / ind > 0
    rho = ind[cond][-1]
    theta = css[cond][-1] / rho
    return np.maximum(v - theta, 0.0)
