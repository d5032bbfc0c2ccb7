r"""Weighted least-squares solution of relative sky levels from pairwise differences.

Each used pair :math:`k` of overlapping images (or groups) :math:`a_k, b_k` gives
a measured difference of sky statistics :math:`d_k = s_{a_k} - s_{b_k}` with
variance :math:`v_k`. The unknown levels :math:`L` minimise

.. math::

    \chi^2 = \sum_k \frac{\left(d_k - (L_{a_k} - L_{b_k})\right)^2}{v_k},

whose normal matrix is the weighted graph Laplacian of the overlap graph
(:math:`w_k = 1/v_k`). The Laplacian is singular once per connected component
(a common constant is undetermined), so every component is solved on its own with
one level fixed (the gauge), by a sparse LU factorisation, and then anchored: its
lowest level is set to zero (``anchor='min'``) or its highest (``anchor='max'``).
The covariance of the reduced system gives the uncertainty of every level relative
to the component's anchor image, scaled by the Birge ratio
:math:`\sqrt{\chi^2/\nu}` when the scatter of the pairs exceeds their stated
errors (:math:`\nu` = pairs − members + 1 > 0).

This replaces the dense pseudo-inverse of jwst ``skymatch``, whose minimum-norm
solution silently mixes disconnected sub-mosaics, and whose rows are weighted by
the pixel count (so that the weights grow as npix²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.sparse.linalg import splu

__all__ = ["ComponentSolution", "OffsetSolution", "connected_components", "solve_offsets"]

_DENSE_LIMIT = 1500


@dataclass(frozen=True)
class ComponentSolution:
    """One connected component of the overlap graph.

    Attributes
    ----------
    label : int
        Component number (0 … n_components-1), ordered by the smallest member index.
    members : numpy.ndarray
        Indices of the nodes (images or groups) in the component.
    anchor : int
        Index of the node whose level is zero after anchoring.
    n_pairs : int
        Number of pairs used in the component.
    chi2 : float
        Weighted sum of squared residuals.
    dof : int
        Degrees of freedom, n_pairs − (len(members) − 1).
    """

    label: int
    members: np.ndarray
    anchor: int
    n_pairs: int
    chi2: float
    dof: int

    @property
    def scale(self) -> float:
        """Birge ratio applied to the uncertainties (≥ 1)."""
        if self.dof <= 0:
            return 1.0
        return max(1.0, math.sqrt(self.chi2 / self.dof))


@dataclass(frozen=True)
class OffsetSolution:
    """Solved levels of every node.

    Attributes
    ----------
    levels : numpy.ndarray
        Level of each node, zero at each component's anchor.
    errors : numpy.ndarray
        1-σ uncertainty of each level relative to its component's anchor.
    component : numpy.ndarray
        Component label of each node.
    residuals : numpy.ndarray
        ``d_k - (L_a - L_b)`` for each input pair.
    components : tuple of ComponentSolution
    """

    levels: np.ndarray
    errors: np.ndarray
    component: np.ndarray
    residuals: np.ndarray
    components: tuple


def connected_components(n, ia, ib):
    """Component label of each of ``n`` nodes for the edges ``(ia, ib)``.

    Labels are ordered by the smallest node index they contain.
    """
    ia = np.asarray(ia, dtype=np.intp)
    ib = np.asarray(ib, dtype=np.intp)
    adj = sparse.coo_matrix((np.ones(ia.size), (ia, ib)), shape=(n, n)).tocsr()
    _, labels = csgraph.connected_components(adj, directed=False)
    # Relabel by first appearance so that labels are stable and readable.
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size)
    return remap[labels]


def solve_offsets(n, ia, ib, diff, var, *, anchor="min") -> OffsetSolution:
    """Solve for node levels from pairwise differences, component by component.

    Parameters
    ----------
    n : int
        Number of nodes.
    ia, ib : array_like of int
        Nodes of each pair; ``diff`` is level(ia) − level(ib).
    diff : array_like of float
        Measured differences.
    var : array_like of float
        Variance of each difference (> 0).
    anchor : {'min', 'max'}
        Which level of each component is set to zero.

    Returns
    -------
    OffsetSolution
    """
    if anchor not in ("min", "max"):
        raise ValueError(f"anchor must be 'min' or 'max', not {anchor!r}")
    ia = np.asarray(ia, dtype=np.intp)
    ib = np.asarray(ib, dtype=np.intp)
    diff = np.asarray(diff, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    if not (ia.shape == ib.shape == diff.shape == var.shape):
        raise ValueError("ia, ib, diff and var must have the same length")
    if ia.size and (np.any(ia == ib) or ia.min() < 0 or max(ia.max(), ib.max()) >= n):
        raise ValueError("pairs must join two different nodes in range(n)")
    if not (np.isfinite(diff).all() and np.isfinite(var).all() and np.all(var > 0)):
        raise ValueError("differences must be finite and variances finite and positive")

    w = 1.0 / var
    labels = connected_components(n, ia, ib)
    levels = np.zeros(n)
    errors = np.zeros(n)
    comps = []
    pair_label = labels[ia] if ia.size else np.empty(0, dtype=np.intp)
    for label in range(int(labels.max()) + 1 if n else 0):
        members = np.flatnonzero(labels == label)
        sel = np.flatnonzero(pair_label == label)
        if members.size == 1:
            comps.append(ComponentSolution(label, members, int(members[0]), 0, 0.0, 0))
            continue
        lv, cov_diag, cov_col, ref_local = _solve_component(
            members, ia[sel], ib[sel], diff[sel], w[sel], anchor
        )
        local_index = {int(m): k for k, m in enumerate(members)}
        la = np.array([local_index[int(i)] for i in ia[sel]])
        lb = np.array([local_index[int(i)] for i in ib[sel]])
        res = diff[sel] - (lv[la] - lv[lb])
        chi2 = float(np.sum(w[sel] * res**2))
        comp = ComponentSolution(
            label,
            members,
            int(members[ref_local]),
            int(sel.size),
            chi2,
            int(sel.size - members.size + 1),
        )
        # Variance of L_i - L_ref from the gauge-fixed covariance (gauge: first member).
        rel_var = cov_diag + cov_diag[ref_local] - 2.0 * cov_col
        levels[members] = lv
        errors[members] = np.sqrt(np.clip(rel_var, 0.0, None)) * comp.scale
        comps.append(comp)
    residuals = diff - (levels[ia] - levels[ib]) if ia.size else np.empty(0)
    return OffsetSolution(levels, errors, labels, residuals, tuple(comps))


def _solve_component(members, ia, ib, diff, w, anchor):
    """Gauge-fixed sparse solve of one component; returns anchored levels and covariances."""
    m = members.size
    index = np.full(int(members.max()) + 1, -1, dtype=np.intp)
    index[members] = np.arange(m)
    a = index[ia]
    b = index[ib]
    # Weighted Laplacian and right-hand side.
    rows = np.concatenate([a, b, a, b])
    cols = np.concatenate([a, b, b, a])
    vals = np.concatenate([w, w, -w, -w])
    lap = sparse.coo_matrix((vals, (rows, cols)), shape=(m, m)).tocsc()
    rhs = np.zeros(m)
    np.add.at(rhs, a, w * diff)
    np.add.at(rhs, b, -w * diff)
    # Gauge: level of local node 0 fixed at zero; solve for the others.
    red = lap[1:, 1:].tocsc()
    lu = splu(red)
    sol = np.concatenate([[0.0], lu.solve(rhs[1:])])
    ref = int(np.argmin(sol) if anchor == "min" else np.argmax(sol))
    sol = sol - sol[ref]
    cov_diag, cov_col = _covariance_parts(lu, m - 1, ref - 1)
    # Prepend the gauge node (zero variance, zero covariance).
    cov_diag = np.concatenate([[0.0], cov_diag])
    cov_col = np.concatenate([[0.0], cov_col])
    return sol, cov_diag, cov_col, ref


def _covariance_parts(lu, size, ref):
    """Diagonal of the inverse of the reduced Laplacian and its column ``ref`` (−1: none)."""
    col = np.zeros(size)
    if ref >= 0:
        e = np.zeros(size)
        e[ref] = 1.0
        col = lu.solve(e)
    if size <= _DENSE_LIMIT:
        inv = lu.solve(np.eye(size))
        return np.diag(inv).copy(), col
    diag = np.empty(size)
    block = 256
    for start in range(0, size, block):
        stop = min(size, start + block)
        rhs = np.zeros((size, stop - start))
        rhs[np.arange(start, stop), np.arange(stop - start)] = 1.0
        diag[start:stop] = lu.solve(rhs)[np.arange(start, stop), np.arange(stop - start)]
    return diag, col
