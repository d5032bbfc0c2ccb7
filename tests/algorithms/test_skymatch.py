"""match_sky on images with known sky levels (plain numpy TAN WCS)."""

import numpy as np
import pytest

from stmatch.algorithms import SkyInput, SkyMatchParams, SkyStatistic, match_sky

from ._tan import Tan, grid_mosaic


def _inputs(wcss, shape, skies, *, noise=1.0, seed=0, groups=None, masks=None, extra=None):
    rng = np.random.default_rng(seed)
    inputs = []
    for k, w in enumerate(wcss):
        data = (skies[k] + rng.normal(0, noise, shape)).astype(np.float32)
        if extra is not None:
            data += extra[k]
        good = np.ones(shape, bool) if masks is None else masks[k]
        inputs.append(
            SkyInput(
                f"im{k}",
                shape,
                w.fwd,
                w.inv,
                lambda d=data, g=good: (d, g),
                group=None if groups is None else groups[k],
            )
        )
    return inputs


@pytest.mark.parametrize("stat", ["mean", "median", "midpt", "mode"])
def test_match_recovers_offsets_within_stated_errors(stat):
    shape = (200, 200)
    wcss = grid_mosaic(3, 3, shape, overlap=0.25)
    skies = np.random.default_rng(1).uniform(0, 10, 9)
    res = match_sky(
        _inputs(wcss, shape, skies), SkyMatchParams(skymethod="match", statistic=SkyStatistic(stat))
    )
    truth = skies - skies.min()
    assert res.n_components == 1 and res.valid.all()
    pull = (res.level - truth) / np.where(res.level_err > 0, res.level_err, 1)
    assert np.abs(res.level - truth).max() < (0.2 if stat == "mode" else 0.03)
    assert np.abs(pull).max() < 5
    assert res.level[np.argmin(skies)] == 0.0


def test_match_up_and_global_variants():
    shape = (150, 150)
    wcss = grid_mosaic(3, 2, shape, overlap=0.3)
    skies = np.array([5.0, 2.0, 7.0, 3.0, 4.0, 6.0])
    ins = _inputs(wcss, shape, skies, noise=0.1)
    stat = SkyStatistic("mean")
    up = match_sky(ins, SkyMatchParams(skymethod="match", match_down=False, statistic=stat))
    assert np.allclose(up.level, skies - skies.max(), atol=0.01)
    gm = match_sky(ins, SkyMatchParams(skymethod="global+match", statistic=stat))
    assert np.allclose(gm.level, skies, atol=0.01)
    loc = match_sky(ins, SkyMatchParams(skymethod="local", statistic=stat))
    assert np.allclose(loc.level, skies, atol=0.01)
    assert np.all(loc.component == -1) and len(loc.pairs) == 0
    glo = match_sky(ins, SkyMatchParams(skymethod="global", statistic=stat))
    assert np.allclose(glo.level, skies.min(), atol=0.01)


def test_disconnected_components_found_and_anchored_separately():
    shape = (120, 120)
    left = grid_mosaic(2, 2, shape, overlap=0.3, ra=150.0)
    right = grid_mosaic(2, 2, shape, overlap=0.3, ra=151.0)
    skies = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 12.0, 11.0, 13.0])
    ins = _inputs(left + right, shape, skies, noise=0.05)
    stat = SkyStatistic("mean")
    res = match_sky(ins, SkyMatchParams(skymethod="match", statistic=stat))
    assert res.n_components == 2
    assert res.component.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.allclose(res.level[:4], skies[:4] - 1.0, atol=0.01)
    assert np.allclose(res.level[4:], skies[4:] - 10.0, atol=0.01)
    # global+match: each component gets its own baseline, so absolute skies come back
    gm = match_sky(ins, SkyMatchParams(skymethod="global+match", statistic=stat))
    assert np.allclose(gm.level, skies, atol=0.01)


def test_groups_share_one_level():
    shape = (100, 100)
    wcss = grid_mosaic(4, 2, shape, overlap=0.2)
    # two exposures of 4 detectors each (detectors 0-3 and 4-7 are the two rows)
    groups = ["expA"] * 4 + ["expB"] * 4
    skies = np.array([2.0] * 4 + [5.0] * 4)
    res = match_sky(
        _inputs(wcss, shape, skies, groups=groups, noise=0.05),
        SkyMatchParams(skymethod="match", statistic=SkyStatistic("mean")),
    )
    assert res.group_keys == ("expA", "expB")
    assert res.group_of_image.tolist() == [0] * 4 + [1] * 4
    assert np.allclose(res.image_level, [0.0] * 4 + [3.0] * 4, atol=0.01)
    # pairs within one exposure are not used
    assert all(p.group_a != p.group_b for p in res.pairs)


def test_joint_valid_pixels_avoid_bias_from_masked_structure():
    """A bright extended source masked in one image only must not bias the offset.

    jwst computes each side's statistic with its own mask, so image a's statistic
    includes the source where b's mask hides it: the solved offset is biased. We
    use pixels valid in both images.
    """
    shape = (200, 200)
    a = Tan(150.0, 2.0, (99.5, 99.5))
    b = Tan(150.0, 2.0, (99.5 - 100, 99.5))  # b shifted by 100 px: overlap is a's right half
    extra_a = np.zeros(shape, np.float32)
    extra_b = np.zeros(shape, np.float32)
    # the same source on the sky: a's columns 150-199 ⇔ b's columns 50-99
    extra_a[:, 150:200] += 20.0
    extra_b[:, 50:100] += 20.0
    mask_a = np.ones(shape, bool)
    mask_b = np.ones(shape, bool)
    mask_b[:, 50:100] = False  # b flags the source region (e.g. saturated)
    res = match_sky(
        _inputs(
            [a, b],
            shape,
            np.array([3.0, 1.0]),
            noise=0.1,
            masks=[mask_a, mask_b],
            extra=[extra_a, extra_b],
        ),
        SkyMatchParams(skymethod="match", statistic=SkyStatistic("mean", nclip=0)),
    )
    assert res.level[0] - res.level[1] == pytest.approx(2.0, abs=0.02)
    # what each image's own mask would give (jwst): a biased by ~10
    own_a = (3.0 + extra_a[:, 100:200]).mean()
    own_b = 1.0
    assert own_a - own_b > 9


def test_geometry_failure_drops_the_pair_not_the_run():
    shape = (100, 100)
    wcss = grid_mosaic(3, 1, shape, overlap=0.3)
    ins = _inputs(wcss, shape, np.array([1.0, 2.0, 3.0]), noise=0.05)
    good = ins[2]

    def wiggly_fwd(x, y):  # too wiggly for the fitted inverse: the exact one is used
        x = np.asarray(x, float)
        return good.pixel_to_world(x + 0.5 * np.sin(x / 2.0), y)

    def broken_inv(ra, dec):  # ... and it fails, e.g. an iteration that does not converge
        raise ValueError("inverse transform did not converge")

    ins[2] = SkyInput(good.name, good.shape, wiggly_fwd, broken_inv, good.load)
    res = match_sky(ins, SkyMatchParams(skymethod="match", statistic=SkyStatistic("mean")))
    failed = [p for p in res.pairs if not p.used]
    assert failed and all("geometry failed" in p.reason for p in failed)
    assert res.valid[0] and res.valid[1]
    assert res.level[1] - res.level[0] == pytest.approx(1.0, abs=0.02)
    assert not res.valid[2] and "no overlap" in res.reason[2]


def test_missing_wcs_and_all_nan_images_are_reported():
    shape = (80, 80)
    wcss = grid_mosaic(3, 1, shape, overlap=0.3)
    ins = _inputs(wcss, shape, np.array([1.0, 2.0, 3.0]), noise=0.05)

    def no_wcs(*_):
        raise ValueError("no WCS")

    ins[0] = SkyInput("nowcs", shape, no_wcs, no_wcs, ins[0].load)
    nan = np.full(shape, np.nan, np.float32)
    ins[2] = SkyInput("nan", shape, wcss[2].fwd, wcss[2].inv, lambda: (nan, np.ones(shape, bool)))
    res = match_sky(ins, SkyMatchParams(skymethod="match", statistic=SkyStatistic("mean")))
    assert not res.valid[0] and "WCS" in res.reason[0]
    assert not res.valid[2]
    assert not res.valid[1]
    loc = match_sky(ins, SkyMatchParams(skymethod="local", statistic=SkyStatistic("mean")))
    assert loc.valid.tolist() == [True, True, False]
    assert "no valid pixels" in loc.reason[2]


def test_fully_masked_overlap_gives_unused_pair_with_reason():
    shape = (100, 100)
    wcss = grid_mosaic(2, 1, shape, overlap=0.3)
    masks = [np.ones(shape, bool), np.ones(shape, bool)]
    masks[1][:, :40] = False  # b's overlap region is all flagged
    res = match_sky(
        _inputs(wcss, shape, np.array([1.0, 2.0]), masks=masks), SkyMatchParams(skymethod="match")
    )
    assert len(res.pairs) == 1 and not res.pairs[0].used
    assert "pixels valid in both" in res.pairs[0].reason
    assert not res.valid.any()


def test_bounded_cache_reads_each_image_a_few_times():
    shape = (64, 64)
    wcss = grid_mosaic(8, 8, shape, overlap=0.2)
    counts = np.zeros(64, int)
    rng = np.random.default_rng(0)
    skies = rng.uniform(0, 5, 64)
    ins = []
    for k, w in enumerate(wcss):
        data = (skies[k] + rng.normal(0, 0.1, shape)).astype(np.float32)

        def load(d=data, k=k):
            counts[k] += 1
            return d, np.ones(shape, bool)

        ins.append(SkyInput(f"im{k}", shape, w.fwd, w.inv, load))
    res = match_sky(
        ins, SkyMatchParams(skymethod="match", cache_size=24, statistic=SkyStatistic("mean"))
    )
    assert np.allclose(res.level - res.level.mean(), skies - skies.mean(), atol=0.04)
    assert counts.max() <= 3, counts


def test_params_validate():
    with pytest.raises(ValueError):
        SkyMatchParams(skymethod="best")
    with pytest.raises(ValueError):
        SkyMatchParams(cache_size=1)
    with pytest.raises(ValueError):
        match_sky([])


def test_identical_and_nearly_identical_footprints():
    """Spherical polygon libraries fail on (nearly) identical outlines; we do not."""
    shape = (100, 100)
    a = Tan(150.0, 2.0, (49.5, 49.5))
    b = Tan(150.0, 2.0, (49.5, 49.5))  # identical
    c = Tan(150.0, 2.0, (49.5 + 1e-9, 49.5 - 1e-9))  # nearly identical
    res = match_sky(
        _inputs([a, b, c], shape, np.array([1.0, 4.0, 2.5]), noise=0.05),
        SkyMatchParams(skymethod="match", statistic=SkyStatistic("mean")),
    )
    assert all(p.used for p in res.pairs) and len(res.pairs) == 3
    assert all(p.npix > 0.99 * 100 * 100 for p in res.pairs)  # a few 4-sigma clips
    assert np.allclose(res.level, [0.0, 3.0, 1.5], atol=0.01)


# ------------------------------------------------------------------ with a mapper
class _Arrays:
    """A picklable ``load``: arrays held by value (module level, pickled by reference)."""

    def __init__(self, data, good):
        self.data, self.good = data, good

    def __call__(self):
        return self.data, self.good


def _picklable_inputs():
    """Two components of 2 x 2 (one group spans two images), NaNs and flagged pixels."""
    from dataclasses import replace

    shape = (90, 90)
    wcss = grid_mosaic(2, 2, shape, overlap=0.3) + grid_mosaic(2, 2, shape, overlap=0.3, ra=151)
    skies = np.array([1.0, 2.5, 4.0, 3.0, 7.0, 6.0, 8.5, 9.0])
    masks = [np.random.default_rng(k).random(shape) > 0.01 for k in range(8)]
    ins = _inputs(wcss, shape, skies, noise=0.3, seed=5, masks=masks)
    ins = [replace(inp, load=_Arrays(*inp.load())) for inp in ins]
    ins[1].load.data[10:20, 60:80] = np.nan
    ins[6] = replace(ins[6], group="g6")
    ins[7] = replace(ins[7], group="g6")
    return ins


def _pickling_mapper(calls):
    """A list-based mapper that sends every item through pickle, as process workers do."""
    import pickle

    def mapper(fn, items):
        items = [pickle.loads(pickle.dumps(item)) for item in items]
        calls.append((fn.__name__, items))
        return [fn(item) for item in items]

    return mapper


def _same_records(p, q):
    assert len(p) == len(q)
    for x, y in zip(p, q, strict=True):
        for name in x.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)


@pytest.mark.parametrize("method", ["match", "global+match", "local", "global"])
def test_mapper_gives_identical_results(method):
    ins = _picklable_inputs()
    params = SkyMatchParams(skymethod=method, statistic=SkyStatistic("mode"), cache_size=3)
    ref = match_sky(ins, params)
    calls = []
    got = match_sky(ins, params, mapper=_pickling_mapper(calls), pairs_per_task=3, task_slots=2)
    for name in ("level", "level_err", "local_sky", "component", "n_pairs", "valid"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    assert got.reason == ref.reason and got.n_candidates == ref.n_candidates
    _same_records(got.pairs, ref.pairs)
    kinds = [fn for fn, _ in calls]
    assert kinds.count("measure_pair_batch") == ("match" in method)
    assert kinds.count("local_sky_batch") == (method != "match")
    for fn, tasks in calls:
        if fn == "measure_pair_batch":
            assert [len(t.pairs) for t in tasks][:-1] == [3] * (len(tasks) - 1)
            assert sum(len(t.pairs) for t in tasks) == ref.n_candidates
            for t in tasks:  # a task carries exactly the images its pairs use
                assert {img.index for img in t.images} == {i for p in t.pairs for i in p[:2]}
        else:
            groups = [g for t in tasks for g, _ in t.groups]
            assert groups == list(range(len(ref.group_keys)))
    if "match" in method:
        assert ref.n_components == 2 and len(ref.pairs) > 0


def test_mapper_keeps_dropped_pairs_and_log_lines(caplog):
    """Geometry failures inside tasks become the same unused records and warnings."""
    shape = (100, 100)
    wcss = grid_mosaic(3, 1, shape, overlap=0.3)
    ins = _inputs(wcss, shape, np.array([1.0, 2.0, 3.0]), noise=0.05)

    def broken_inv(ra, dec):
        raise ValueError("inverse transform did not converge")

    def wiggly_fwd(x, y):
        x = np.asarray(x, float)
        return wcss[2].fwd(x + 0.5 * np.sin(x / 2.0), y)

    ins[2] = SkyInput(ins[2].name, shape, wiggly_fwd, broken_inv, ins[2].load)
    params = SkyMatchParams(skymethod="match", statistic=SkyStatistic("mean"))
    with caplog.at_level("WARNING", logger="stmatch.algorithms.skymatch"):
        ref = match_sky(ins, params)
        n_ref = caplog.text.count("dropped: geometry failed")
        caplog.clear()
        got = match_sky(ins, params, mapper=lambda fn, items: [fn(x) for x in items])
        n_got = caplog.text.count("dropped: geometry failed")
    _same_records(got.pairs, ref.pairs)
    np.testing.assert_array_equal(got.level, ref.level)
    assert n_ref == n_got > 0


def test_batch_size_rule_and_validation():
    from stmatch.algorithms.skypairs import MAX_PAIRS_PER_TASK, batch_size

    assert batch_size(20, 2) == 3  # ceil(20 / 8): about four tasks per slot
    assert batch_size(3, 16) == 1
    assert batch_size(10**6, 4) == MAX_PAIRS_PER_TASK == 64
    assert batch_size(100, None) == 4  # 8 slots when unknown
    assert batch_size(100, 2, 7) == 7
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="pairs_per_task"):
            batch_size(10, 2, bad)
