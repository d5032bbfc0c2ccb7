import numpy as np
import pytest

from stmatch.algorithms.fluxratio import FluxRatioFit, fit_flux_ratio
from stmatch.algorithms.psf import gaussian_psf
from stmatch.algorithms.stars import StarList, find_stars, psf_flux


def _render(shape, xs, ys, fluxes, fwhm, size=25):
    """Sum of pixel-integrated Gaussian stars at sub-pixel positions."""
    img = np.zeros(shape)
    h = size // 2
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        ix, iy = int(round(x)), int(round(y))
        stamp = gaussian_psf(size, fwhm, center=(h + y - iy, h + x - ix))
        y0, x0 = iy - h, ix - h
        sy = slice(max(y0, 0), min(y0 + size, shape[0]))
        sx = slice(max(x0, 0), min(x0 + size, shape[1]))
        img[sy, sx] += f * stamp[sy.start - y0 : sy.stop - y0, sx.start - x0 : sx.stop - x0]
    return img


def _grid_positions(rng, nx, ny, spacing, margin, jitter):
    gx, gy = np.meshgrid(np.arange(nx) * spacing + margin, np.arange(ny) * spacing + margin)
    n = nx * ny
    return gx.ravel() + rng.uniform(-jitter, jitter, n), gy.ravel() + rng.uniform(
        -jitter, jitter, n
    )


# ----------------------------------------------------------------------------- find_stars
FWHM = 3.0


def _star_field(seed=5):
    rng = np.random.default_rng(seed)
    shape = (260, 300)
    xs, ys = _grid_positions(rng, 6, 5, 45, 30, 4.0)  # 30 isolated stars
    fl = rng.uniform(3e3, 3e4, xs.size)
    img = _render(shape, xs, ys, fl, FWHM) + rng.normal(0.0, 2.0, shape)
    return img, xs, ys, fl, rng


def test_find_stars_recovers_isolated_and_rejects_the_rest():
    img, xs, ys, fl, _ = _star_field()
    shape = img.shape
    extra_x = [40.0, 47.0, 3.0, 150.0, 200.0]
    extra_y = [240.0, 240.0, 150.0, 243.0, 10.0]
    extra_f = [1e4, 6e3, 1e4, 1e4, 1e5]  # pair (2), edge, masked, saturated
    img = img + _render(shape, extra_x, extra_y, extra_f, FWHM)
    img[250, 270] += 3000.0  # a hot pixel
    mask = np.zeros(shape, dtype=bool)
    mask[244, 151] = True  # next to the masked star's centre
    before = img.copy()
    stars = find_stars(img, sigma=2.0, mask=mask, fwhm=FWHM, saturation=5000.0, threshold=10.0)
    assert np.array_equal(img, before)
    assert isinstance(stars, StarList) and len(stars) == xs.size
    d = np.hypot(stars.x[:, None] - xs[None, :], stars.y[:, None] - ys[None, :])
    match = d.argmin(axis=1)
    assert np.unique(match).size == xs.size  # every injected isolated star, once
    assert d.min(axis=1).max() < 0.1
    assert np.all(np.diff(stars.flux) <= 0)  # brightest first
    np.testing.assert_allclose(stars.flux, fl[match], rtol=0.05)
    assert np.all(stars.isolated) and np.all(stars.snr >= 10.0) and stars.fwhm == FWHM
    # the pair is found (flagged crowded) when crowding is allowed
    crowded = find_stars(img, sigma=2.0, mask=mask, fwhm=FWHM, saturation=5000.0, keep_crowded=True)
    bad = ~crowded.isolated
    assert np.sort(crowded.x[bad]).round().tolist() == [40.0, 47.0]
    # without the mask and the saturation level those two come back
    loose = find_stars(img, sigma=2.0, fwhm=FWHM)
    got = {(round(x), round(y)) for x, y in zip(loose.x, loose.y, strict=True)}
    assert (150, 243) in got and (200, 10) in got and (3, 150) not in got
    assert (270, 250) not in got  # the hot pixel is too sharp


def test_find_stars_estimates_fwhm_and_limits_count():
    img, xs, ys, fl, _ = _star_field(6)
    stars = find_stars(img, sigma=2.0)
    # pixel-integrated FWHM 3 Gaussian: sqrt(3^2 + 8 ln2 / 12) = 3.09
    assert stars.fwhm == pytest.approx(3.09, rel=0.05)
    assert len(stars) == xs.size
    every = find_stars(img, sigma=2.0, fwhm=FWHM)
    top = find_stars(img, sigma=2.0, fwhm=FWHM, max_stars=5)
    assert len(top) == 5
    np.testing.assert_array_equal(top.flux, every.flux[:5])
    few = find_stars(img, sigma=2.0, fwhm=FWHM, border=60.0)
    assert np.all((few.x >= 60) & (few.x <= img.shape[1] - 61))
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        find_stars(img, sigma=2.0, mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="sigma"):
        find_stars(img, sigma=-1.0)
    blank = np.random.default_rng(0).normal(0.0, 1.0, (100, 100))
    assert len(find_stars(blank, sigma=1.0, fwhm=FWHM)) == 0
    with pytest.raises(ValueError, match="cannot estimate the FWHM"):
        find_stars(blank, sigma=1.0)


# ----------------------------------------------------------------------------- psf_flux
def test_psf_flux_exact_without_noise_and_with_background():
    rng = np.random.default_rng(2)
    xs, ys = _grid_positions(rng, 4, 4, 30, 25, 0.5)
    fl = rng.uniform(1e3, 1e4, xs.size)
    img = _render((130, 130), xs, ys, fl, 3.5) + 17.0  # constant background: fitted
    psf = gaussian_psf(25, 3.5)
    f, e = psf_flux(img, xs, ys, psf, sigma=1.0)
    # exact up to the Fourier shift of a not quite band-limited pixelised Gaussian
    np.testing.assert_allclose(f, fl, rtol=1e-8)
    # error of the linear fit: 1 / sqrt(sum P^2) grown by the background term
    assert np.all(e > 1.0 / np.sqrt((psf**2).sum())) and np.all(e < 1.2 / np.sqrt((psf**2).sum()))
    # a masked core pixel changes nothing without noise; a fully masked star gives NaN
    mask = np.zeros(img.shape, bool)
    mask[int(round(ys[0])), int(round(xs[0]))] = True
    mask[int(round(ys[1])) - 12 : int(round(ys[1])) + 13, int(round(xs[1])) - 12 :] = True
    fm, em = psf_flux(img, xs, ys, psf, sigma=1.0, mask=mask)
    assert fm[0] == pytest.approx(fl[0], rel=1e-6) and em[0] > e[0]
    assert np.isnan(fm[1]) and np.isnan(em[1])
    f0, e0 = psf_flux(img, xs[2], ys[2], psf, sigma=1.0)
    assert isinstance(f0, float) and f0 == pytest.approx(fl[2], rel=1e-8)
    assert np.isnan(psf_flux(img, -50.0, 10.0, psf, sigma=1.0)[0])


@pytest.mark.parametrize("use_var", [False, True])
def test_psf_flux_pulls_are_standard_normal(use_var):
    rng = np.random.default_rng(7 + use_var)
    shape = (600, 600)
    xs, ys = _grid_positions(rng, 20, 20, 29, 24, 0.5)  # 400 stars
    fl = rng.uniform(200.0, 2000.0, xs.size)
    img = _render(shape, xs, ys, fl, 3.0)
    if use_var:  # noise that varies across the image, given as a variance map
        var = np.linspace(1.0, 9.0, shape[1])[None, :] * np.ones(shape)
        kw = {"sigma": 1.0, "var": var}
    else:
        var = np.full(shape, 4.0)
        kw = {"sigma": 2.0}
    img = img + rng.normal(0.0, 1.0, shape) * np.sqrt(var)
    f, e = psf_flux(img, xs, ys, gaussian_psf(25, 3.0), **kw)
    pull = (f - fl) / e
    assert abs(pull.mean()) < 0.15  # 3 / sqrt(400)
    assert 0.9 < pull.std() < 1.1


# ----------------------------------------------------------------------------- flux ratio
FW_REF, FW_NEW, S_REF, S_NEW = 2.5, 3.2, 2.0, 3.0
PSF_REF, PSF_NEW = gaussian_psf(25, FW_REF), gaussian_psf(25, FW_NEW)


def _pair(seed, beta, n_side=(8, 5), new_only=(), variable=()):
    rng = np.random.default_rng(seed)
    xs, ys = _grid_positions(rng, *n_side, 32, 22, 3.0)
    shape = (n_side[1] * 32 + 22, n_side[0] * 32 + 22)
    fl = np.exp(rng.uniform(np.log(2e3), np.log(2e4), xs.size))
    fl_new = beta * fl
    for i in variable:
        fl_new[i] *= 1.5
    ref = _render(shape, xs, ys, fl, FW_REF) + rng.normal(0.0, S_REF, shape)
    tx = np.array([p[0] for p in new_only], dtype=float)
    ty = np.array([p[1] for p in new_only], dtype=float)
    new = _render(
        shape, np.append(xs, tx), np.append(ys, ty), np.append(fl_new, [5e3] * tx.size), FW_NEW
    )
    new = new + rng.normal(0.0, S_NEW, shape)
    return new, ref, xs, ys, tx, ty


def _fit(new, ref, **kw):
    return fit_flux_ratio(new, ref, PSF_NEW, PSF_REF, sigma_new=S_NEW, sigma_ref=S_REF, **kw)


@pytest.mark.parametrize("beta", [1.02, 0.5])
def test_fit_flux_ratio_recovers_beta(beta):
    new, ref, xs, ys, _, _ = _pair(21, beta)
    res = _fit(new, ref)
    assert isinstance(res, FluxRatioFit)
    assert res.n_candidates == 40 and res.n_used >= 38
    assert abs(res.beta - beta) < 3.0 * res.beta_err
    assert res.beta_err < 0.005 * beta
    assert res.used.shape == res.flux_new.shape == (40,)
    d = np.hypot(res.x[:, None] - xs[None], res.y[:, None] - ys[None]).min(axis=1)
    assert d.max() < 0.1


def test_fit_flux_ratio_pulls():
    pulls, chi2 = [], []
    for seed in range(20):
        new, ref, *_ = _pair(100 + seed, 0.8)
        res = _fit(new, ref, error_floor=0.0)  # the errors are exact here: no floor
        pulls.append((res.beta - 0.8) / res.beta_err)
        chi2.append(res.chi2_dof)
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 0.7
    assert 0.6 < pulls.std() < 1.4
    assert 0.7 < np.mean(chi2) < 1.3


def test_fit_flux_ratio_clips_transients_and_variables():
    transients = [(38.0, 38.0), (102.0, 134.0), (230.0, 70.0)]  # between the stars
    new, ref, xs, ys, tx, ty = _pair(31, 1.02, new_only=transients, variable=(4, 17))
    pos = np.column_stack([np.append(xs, tx), np.append(ys, ty)])
    res = _fit(new, ref, positions=pos)
    assert not np.any(res.used[40:]) and not res.used[4] and not res.used[17]
    assert res.n_used >= 35
    assert abs(res.beta - 1.02) < 3.0 * res.beta_err
    # stars found in ref: the variables are found and clipped
    auto = _fit(new, ref)
    for i in (4, 17):
        k = np.argmin(np.hypot(auto.x - xs[i], auto.y - ys[i]))
        assert not auto.used[k]
    assert abs(auto.beta - 1.02) < 3.0 * auto.beta_err
    # without clipping the variables bias the fit by many sigma, and chi2 says so
    loose = _fit(new, ref, clip=1e6)
    assert abs(loose.beta - 1.02) > 4.0 * auto.beta_err and loose.chi2_dof > 5.0


def test_fit_flux_ratio_identical_images():
    _, ref, *_ = _pair(41, 1.0)
    res = fit_flux_ratio(ref, ref, PSF_REF, PSF_REF, sigma_new=S_REF, sigma_ref=S_REF)
    assert res.beta == pytest.approx(1.0, abs=1e-12)
    assert res.chi2_dof == pytest.approx(0.0, abs=1e-20) and res.n_used == 40
    assert 0 < res.beta_err < 0.005


def test_fit_flux_ratio_too_few_stars():
    new, ref, xs, ys, *_ = _pair(51, 1.0, n_side=(3, 1))
    with pytest.raises(ValueError, match="only 3 stars"):
        _fit(new, ref)
    with pytest.raises(ValueError, match="only 2 stars"):
        _fit(new, ref, positions=np.column_stack([xs[:2], ys[:2]]))
    with pytest.raises(ValueError, match="one shape"):
        _fit(new[:-1], ref)
