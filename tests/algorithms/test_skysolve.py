import numpy as np
import pytest

from stmatch.algorithms import solve_offsets
from stmatch.algorithms.skysolve import connected_components


def _chain_pairs(levels, edges, rng=None, sigma=0.0):
    ia = np.array([e[0] for e in edges])
    ib = np.array([e[1] for e in edges])
    diff = levels[ia] - levels[ib]
    if rng is not None:
        diff = diff + rng.normal(0, sigma, diff.size)
    return ia, ib, diff


def test_exact_recovery_and_anchor():
    levels = np.array([3.0, 1.0, 4.0, 1.5, 9.0])
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4), (1, 3)]
    ia, ib, diff = _chain_pairs(levels, edges)
    sol = solve_offsets(5, ia, ib, diff, np.ones(len(edges)), anchor="min")
    assert np.allclose(sol.levels, levels - levels.min(), atol=1e-12)
    assert sol.levels[1] == 0.0 and sol.errors[1] == 0.0
    sol = solve_offsets(5, ia, ib, diff, np.ones(len(edges)), anchor="max")
    assert np.allclose(sol.levels, levels - levels.max(), atol=1e-12)
    assert np.allclose(sol.residuals, 0, atol=1e-12)


def test_components_solved_and_anchored_separately():
    levels = np.array([5.0, 7.0, 6.0, 100.0, 103.0, 42.0])
    edges = [(0, 1), (1, 2), (3, 4)]  # node 5 isolated
    ia, ib, diff = _chain_pairs(levels, edges)
    sol = solve_offsets(6, ia, ib, diff, np.ones(3))
    assert sol.component.tolist() == [0, 0, 0, 1, 1, 2]
    assert np.allclose(sol.levels, [0, 2, 1, 0, 3, 0])
    assert [c.members.tolist() for c in sol.components] == [[0, 1, 2], [3, 4], [5]]
    assert [c.anchor for c in sol.components] == [0, 3, 5]


def test_connected_components_labels_by_first_member():
    labels = connected_components(5, [3, 0], [4, 1])
    assert labels.tolist() == [0, 0, 1, 2, 2]


def test_uncertainties_match_monte_carlo():
    rng = np.random.default_rng(0)
    n = 12
    levels = rng.uniform(0, 5, n)
    edges = [(i, i + 1) for i in range(n - 1)] + [(i, i + 3) for i in range(n - 3)]
    sig = rng.uniform(0.5, 2.0, len(edges))
    sols = []
    for _ in range(1500):
        ia, ib, diff = _chain_pairs(levels, edges)
        diff = diff + rng.normal(0, sig)
        s = solve_offsets(n, ia, ib, diff, sig**2)
        # compare relative to node 0 to avoid the anchor switching between draws
        sols.append(s.levels - s.levels[0])
    scatter = np.std(sols, axis=0)
    ia, ib, diff = _chain_pairs(levels, edges)
    s = solve_offsets(n, ia, ib, diff, sig**2)
    # errors are relative to the anchor; make node 0 the anchor by construction
    if s.components[0].anchor == 0:
        assert np.allclose(s.errors[1:], scatter[1:], rtol=0.1)
    # chi2 per dof is about 1 for correct errors, so no Birge inflation for exact data
    assert s.components[0].scale == 1.0


def test_weights_follow_variance():
    # Two inconsistent measurements of one offset: the precise one wins.
    sol = solve_offsets(2, [0, 0], [1, 1], [1.0, 2.0], [0.01, 1.0])
    assert sol.levels[0] - sol.levels[1] == pytest.approx((1.0 / 0.01 + 2.0) / (1 / 0.01 + 1))


def test_birge_ratio_inflates_errors_for_inconsistent_pairs():
    levels = np.zeros(4)
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]
    ia, ib, _ = _chain_pairs(levels, edges)
    diff = np.array([1.0, -1.0, 1.0, -1.0, 3.0])  # wildly inconsistent at unit errors
    sol = solve_offsets(4, ia, ib, diff, np.ones(5))
    assert sol.components[0].scale > 1.0


@pytest.mark.parametrize(
    "bad",
    [
        dict(ia=[0], ib=[0], diff=[1.0], var=[1.0]),
        dict(ia=[0], ib=[5], diff=[1.0], var=[1.0]),
        dict(ia=[0], ib=[1], diff=[np.nan], var=[1.0]),
        dict(ia=[0], ib=[1], diff=[1.0], var=[0.0]),
    ],
)
def test_bad_input(bad):
    with pytest.raises(ValueError):
        solve_offsets(3, **bad)


def test_large_problem_uses_blocked_covariance():
    from stmatch.algorithms import skysolve

    rng = np.random.default_rng(1)
    side = 45  # 2025 nodes > the dense limit: covariance by blocked sparse solves
    n = side * side
    assert n > skysolve._DENSE_LIMIT
    idx = np.arange(n).reshape(side, side)
    ia = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    ib = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    levels = rng.uniform(0, 10, n)
    sol = solve_offsets(n, ia, ib, levels[ia] - levels[ib], np.ones(ia.size))
    assert np.allclose(sol.levels, levels - levels.min(), atol=1e-8)
    # the blocked diagonal equals the dense one on the same reduced Laplacian
    anchor = sol.components[0].anchor
    assert sol.errors[anchor] == 0.0
    assert np.all(sol.errors[np.arange(n) != anchor] > 0)
    # errors grow with graph distance from the anchor
    ay, ax = divmod(anchor, side)
    far = int(np.argmax([abs(k // side - ay) + abs(k % side - ax) for k in range(n)]))
    near = anchor + 1 if anchor % side < side - 1 else anchor - 1
    assert sol.errors[far] > sol.errors[near]
