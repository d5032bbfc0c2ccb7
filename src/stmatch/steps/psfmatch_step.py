"""PsfModelMatchStep: match an exposure's PSF to a target PSF model.

Solve for a (spatially varying) kernel K with K ⊗ P_exposure ≈ P_target from the
two PSF models (Alard & Lupton 1998, ApJ 503, 325; Alard 2000, A&AS 144, 363;
or a Wiener-filtered ratio of transforms, Aniano et al. 2011, PASP 123, 1218),
then convolve the exposure with it. See ``docs/psfmatch.rst``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from astropy.nddata.bitmask import bitfield_to_boolean_mask, interpret_bit_flags
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ_PIXEL
from threadpoolctl import threadpool_limits

from ..algorithms.chebyshev import image_domain, n_chebyshev_terms
from ..algorithms.psfgrid import fwhm_of
from ..algorithms.psfmatch_basis import (
    alard_lupton_basis,
    alard_lupton_sigmas,
    delta_function_basis,
)
from ..algorithms.psfmatch_kernel import cell_centres, solve_spatial_kernel
from ..algorithms.psfmatch_metrics import check_deconvolution, kernel_quality
from ..models import summarize_quality
from . import _psfmatch_output as output
from . import _psfmatch_psf as psfin
from ._base import StmatchStep
from ._engine import SCHEDULER_SPEC, scheduler_kind
from ._zogy_inputs import dq_of

__all__ = ["PsfModelMatchStep"]

log = logging.getLogger("stmatch.steps.psfmatch")


class PsfModelMatchStep(StmatchStep):
    """Match an exposure's PSF to a target PSF and convolve the exposure.

    The exposure PSF comes from ``psf`` (a file, possibly a grid varying across
    the field), ``psf_fwhm`` (analytic) or the exposure's own stars; the target
    from ``target_psf`` (file), ``target_psf_fwhm`` (analytic) or
    ``target_image`` (another exposure's stars). The result is the exposure, same
    model type, convolved with the matching kernel, with the target PSF attached
    as ``psf``; after a run ``step.kernel_model`` holds the
    :class:`~stmatch.models.MatchingKernelModel` (also written beside the output
    with suffix ``psfmatchkernel`` when saving).
    """

    class_alias = "stmatch_psfmatch"

    spec = f"""
        target_psf = string(default=None) # target PSF file (PsfModel ASDF, stpsf/webbpsf FITS, STDPSF, plain FITS)
        target_psf_fwhm = float(min=0, default=None) # analytic target PSF FWHM (exposure pixels)
        target_psf_profile = option('gaussian', 'moffat', default='gaussian') # analytic target profile
        target_image = string(default=None) # exposure whose PSF (from its stars) is the target
        target_pixel_scale = float(min=0, default=None) # arcsec/px of the target PSF file (default: from the file)
        psf = string(default=None) # PSF file of the exposure (a grid may vary across the field)
        psf_fwhm = float(min=0, default=None) # analytic exposure PSF FWHM (pixels)
        psf_profile = option('gaussian', 'moffat', default='gaussian') # analytic exposure PSF profile
        moffat_beta = float(min=1.0, default=2.5) # Moffat index of analytic PSFs
        psf_size = integer(min=5, default=None) # stamp size of analytic/empirical PSFs (odd; default ~8 FWHM, 25 from stars)
        psf_star_threshold = float(min=3.0, default=20.0) # S/N of stars used for empirical PSFs
        method = option('alard_lupton', 'delta_function', 'fourier', default='alard_lupton') # kernel solution
        kernel_size = integer(min=3, default=21) # kernel size (odd, pixels)
        kernel_sum = float(default=1.0) # sum of the solved kernel
        normalize = boolean(default=True) # convolve with the kernel scaled to unit sum (flux conserving)
        alard_n_gauss = integer(min=1, default=3) # number of Gaussians of the Alard-Lupton basis
        alard_sig_gauss = float_list(min=1, default=list(0.7, 1.5, 3.0)) # their sigmas (pixels) without scale_by_fwhm
        alard_deg_gauss = int_list(min=1, default=list(4, 2, 2)) # polynomial degree per Gaussian
        alard_gauss_beta = float(min=1.0, default=2.0) # ratio of successive sigmas with scale_by_fwhm
        scale_by_fwhm = boolean(default=True) # centre the Gaussian sigmas on sqrt(sigma_t^2 - sigma_s^2)
        regularization_lambda = float(min=0.0, default=0.2) # delta_function: Laplacian regularisation strength
        regularization = float(min=0.0, default=0.0001) # fourier: Wiener regularisation (fraction of max|P|^2)
        window = option('none', 'tukey', 'hann', 'cosine_bell', 'top_hat', default='none') # fourier: window on the kernel transform
        penalty = option('none', 'laplacian', default='none') # fourier: Wiener penalty (flat or Laplacian, as pypher)
        fourier_filter = option('wiener', 'ratio', default='wiener') # fourier: Wiener filter or thresholded ratio of transforms
        pad_psf_by = integer(min=0, default=None) # pixels added to the PSF stamps (even); default automatic
        cell_size = integer(min=8, default=128) # size of the cells where the PSF pair is realised (pixels)
        spatial_kernel_order = integer(min=0, max=5, default=2) # Chebyshev order of the kernel's spatial variation
        allow_deconvolution = boolean(default=False) # proceed (with a warning) when the target is narrower
        n_random_checks = integer(min=0, default=25) # off-grid positions where the kernel quality is measured
        kernel_grid = integer(min=1, max=15, default=5) # kernel images stored on an n x n grid of positions
        dqbits = string(default='~DO_NOT_USE+NON_SCIENCE') # "good" DQ bits (other flagged pixels are masked)
        save_kernel = boolean(default=True) # write the MatchingKernelModel (ASDF) beside the output
        save_qa = boolean(default=False) # write a QA figure (kernel mosaic, encircled energy)
        output_use_model = boolean(default=True) # name the output after the input
        {SCHEDULER_SPEC}
    """  # noqa: E501

    def process(self, input_data):
        """PSF-match one exposure.

        Parameters
        ----------
        input_data : str or DataModel
            An image file or model with 2-D data.

        Returns
        -------
        DataModel
            The convolved exposure (same type as the input).
        """
        self.kernel_model = None
        scheduler_kind(self.scheduler)  # a bad value: ValueError before any work
        model = self._open(input_data)
        name = str(getattr(model.meta, "filename", None) or "exposure")
        shape = tuple(int(s) for s in np.shape(model.data))
        log.info(
            "PSF matching of %s (%d x %d) with method %s", name, shape[1], shape[0], self.method
        )
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.kernel_size > min(shape):
            raise ValueError(
                f"kernel_size {self.kernel_size} is larger than the image ({shape[1]} x {shape[0]})"
            )
        dqbits = interpret_bit_flags(self.dqbits, flag_name_map=DQ_PIXEL)

        # Stage 1: PSFs.
        log.info("Stage 1/5: PSFs")
        source = psfin.exposure_psf(self, model, name, dqbits)
        target = psfin.target_psf(self, model, dqbits, self._datamodels_open)

        # Stage 2: cells and the deconvolution guard.
        log.info("Stage 2/5: cells and deconvolution check")
        constant = psfin.is_constant(source, shape) and psfin.is_constant(target, shape)
        order = 0 if constant else int(self.spatial_kernel_order)
        if constant:
            cx = np.array([(shape[1] - 1) / 2.0])
            cy = np.array([(shape[0] - 1) / 2.0])
            log.info("Both PSFs are constant over the image: one kernel, spatial order 0")
        else:
            cx, cy = self._cells(shape, order)
        sources = np.stack([source.at(y, x) for x, y in zip(cx, cy, strict=True)])
        targets = np.stack([target.at(y, x) for x, y in zip(cx, cy, strict=True)])
        deconv = self._deconvolution_guard(sources, targets, cx, cy)

        # Stage 3: kernel solution.
        log.info(
            "Stage 3/5: kernel solution (%s, spatial order %d, %d cells)",
            self.method,
            order,
            cx.size,
        )
        basis = self._basis(sources, targets)
        # small dense products: one BLAS thread is faster and does not spin
        # against other processes for the cores
        with threadpool_limits(limits=1, user_api="blas"):
            fit = self._solve(sources, targets, cx, cy, order, shape, constant, basis)
        log.info(
            "Kernel: %d x %d, %d spatial term(s), PSF stamps padded to %d px, condition %.3g",
            self.kernel_size,
            self.kernel_size,
            fit.kernel.n_terms,
            fit.padded_size,
            fit.condition_number,
        )

        # Stage 4: quality at the cells and at random off-grid positions.
        log.info("Stage 4/5: kernel quality")
        quality = self._quality(fit, source, target, cx, cy, shape)
        summary = summarize_quality(quality)
        _log_summary(summary)
        if deconv is not None:
            log.warning(
                "Deconvolution allowed: noise gain up to %.3g, W- up to %.3g (%s)",
                summary["noise_gain_max"],
                summary["max_w_minus"],
                deconv.reason,
            )

        # Stage 5: convolution.
        log.info("Stage 5/5: convolving the exposure")
        apply = (
            fit.kernel.scaled(1.0 / self.kernel_sum)
            if (self.normalize and self.kernel_sum != 0)
            else fit.kernel
        )
        bad = self._bad_pixels(model, dqbits)
        result, stats = output.convolve_on(self.scheduler, model, apply, bad)
        target_centre = target.at((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
        result.psf = np.asarray(target_centre, dtype=np.float32)
        info = {
            "method": self.method,
            "source_psf": source.description,
            "target_psf": target.description,
            "spatial_order": order,
            "n_cells": int(cx.size),
            "kernel_size": int(self.kernel_size),
            "kernel_sum": float(self.kernel_sum),
            "normalized": bool(self.normalize),
            "deconvolution": deconv is not None,
            **{k: v for k, v in summary.items() if not k.endswith("_on_cell")},
            **stats,
        }
        self.record_stmatch(result, **info)
        self.kernel_model = self._kernel_model(fit, quality, target_centre, info, shape, basis)
        fw_s = fwhm_of(source.at((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0))
        fw_m = fwhm_of(target_centre)
        log.info(
            "PSF matched: FWHM %.3g -> %.3g px at the centre; %d pixel(s) NaN/DO_NOT_USE, "
            "%d edge pixel(s) flagged NON_SCIENCE",
            fw_s,
            fw_m,
            stats["n_bad_out"],
            stats["n_edge"],
        )
        output.save_products(self, model, self.kernel_model, (self.kernel_model, source, target))
        return result

    # ------------------------------------------------------------------ helpers
    def _open(self, input_data):
        self._input_paths = []
        if isinstance(input_data, (list, tuple)):
            raise ValueError(
                "PsfModelMatchStep matches one exposure at a time; run it once per exposure"
            )
        if isinstance(input_data, (str, Path)):
            path = Path(input_data)
            if not path.exists():
                raise FileNotFoundError(f"input image not found: {path}")
            self._input_paths.append(str(path.resolve()))
            model = self._datamodels_open(str(path))
        else:
            model = input_data
        data = getattr(model, "data", None)
        if data is None or np.ndim(data) != 2:
            raise ValueError(
                f"PsfModelMatchStep needs an image with 2-D data, got "
                f"{None if data is None else np.shape(data)}"
            )
        return model

    def _solve(self, sources, targets, cx, cy, order, shape, constant, basis):
        return solve_spatial_kernel(
            sources,
            targets if not constant else targets[0],
            cx,
            cy,
            order=order,
            domain=image_domain(shape),
            method=self.method,
            kernel_size=self.kernel_size,
            kernel_sum=self.kernel_sum,
            basis=basis,
            regularization_lambda=self.regularization_lambda,
            regularization=self.regularization,
            window=None if self.window == "none" else self.window,
            penalty=self.penalty,
            fourier_filter=self.fourier_filter,
            pad_psf_by=self.pad_psf_by,
        )

    def _cells(self, shape, order):
        n_terms = n_chebyshev_terms(order)
        cell = int(self.cell_size)
        cx, cy = cell_centres(shape, cell)
        if cx.size < n_terms:
            per_axis = math.ceil(math.sqrt(n_terms))
            cell = max(1, min(shape) // per_axis)
            cx, cy = cell_centres(shape, cell)
            log.warning(
                "cell_size %d gives too few cells for spatial order %d (%d terms): "
                "using cells of %d px (%d cells)",
                self.cell_size,
                order,
                n_terms,
                cell,
                cx.size,
            )
        log.info("%d cells of ~%d px", cx.size, cell)
        return cx, cy

    def _deconvolution_guard(self, sources, targets, cx, cy):
        worst = None
        pick = _spread(cx, cy, MAX_CHECKED_CELLS)
        for s, t, x, y in zip(sources[pick], targets[pick], cx[pick], cy[pick], strict=True):
            check = check_deconvolution(s, t)
            if check.is_deconvolution and (worst is None or check.max_gain > worst[0].max_gain):
                worst = (check, x, y)
        if worst is None:
            return None
        check, x, y = worst
        message = (
            f"the target PSF is narrower than the exposure PSF at (x, y) = ({x:.0f}, {y:.0f}): "
            f"{check.reason}; matching would deconvolve (noise amplified up to "
            f"{check.max_gain:.3g}x at some frequencies)"
        )
        if not self.allow_deconvolution:
            raise ValueError(message + "; choose a wider target or set allow_deconvolution=True")
        log.warning(message)
        return check

    def _basis(self, sources, targets):
        if self.method == "fourier":
            return None
        if self.method == "delta_function":
            return delta_function_basis(self.kernel_size)
        if len(self.alard_deg_gauss) != self.alard_n_gauss:
            raise ValueError(
                f"alard_deg_gauss has {len(self.alard_deg_gauss)} entries for "
                f"alard_n_gauss = {self.alard_n_gauss} Gaussians"
            )
        mid = sources.shape[0] // 2
        sigmas = alard_lupton_sigmas(
            n_gauss=self.alard_n_gauss,
            sig_gauss=tuple(self.alard_sig_gauss),
            gauss_beta=self.alard_gauss_beta,
            scale_by_fwhm=self.scale_by_fwhm,
            fwhm_source=fwhm_of(sources[mid]),
            fwhm_target=fwhm_of(targets[mid]),
        )
        log.info(
            "Alard-Lupton basis: sigmas %s px, degrees %s",
            ", ".join(f"{s:.3g}" for s in sigmas),
            list(self.alard_deg_gauss),
        )
        return alard_lupton_basis(
            self.kernel_size, sigmas=sigmas, degrees=tuple(self.alard_deg_gauss)
        )

    def _quality(self, fit, source, target, cx, cy, shape):
        """Quality table (`QUALITY_DTYPE`) at the cells and at random off-grid points."""
        from ..models import empty_quality

        rng = np.random.default_rng(12345)
        n = int(self.n_random_checks)
        pick = _spread(cx, cy, MAX_CHECKED_CELLS)
        cx, cy = cx[pick], cy[pick]
        xs = np.concatenate([cx, rng.uniform(0, shape[1] - 1, n)])
        ys = np.concatenate([cy, rng.uniform(0, shape[0] - 1, n)])
        table = empty_quality(xs.size)
        scale = 1.0 / self.kernel_sum if self.kernel_sum != 0 else 1.0
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            k = fit.kernel.kernel_at(x, y)
            q = kernel_quality(k * scale, source.at(y, x), target.at(y, x))
            table[i] = (
                x,
                y,
                int(i < cx.size),
                q.aniano_d,
                q.w_minus,
                q.max_ee_difference,
                float(k.sum()),
                q.centroid_offset,
                q.noise_gain,
            )
        return table

    def _bad_pixels(self, model, dqbits):
        data = np.asarray(model.data)
        bad = ~np.isfinite(data)
        if dqbits is not None:
            bad |= ~bitfield_to_boolean_mask(dq_of(model), dqbits, good_mask_value=True, dtype=bool)
        return bad

    def _kernel_model(self, fit, quality, target_centre, info, shape, basis):
        from ..models import MatchingKernelModel

        g = int(self.kernel_grid)
        gx = np.linspace(0, shape[1] - 1, g) if g > 1 else np.array([(shape[1] - 1) / 2.0])
        gy = np.linspace(0, shape[0] - 1, g) if g > 1 else np.array([(shape[0] - 1) / 2.0])
        gxx, gyy = (a.ravel() for a in np.meshgrid(gx, gy))
        has_basis = fit.basis is not None and fit.coefficients is not None
        meta = {
            "method": self.method,
            "kernel_size": int(self.kernel_size),
            "image_shape": [int(shape[0]), int(shape[1])],
            "cell_size": int(self.cell_size),
            "n_cells": int(np.size(fit.cell_x)),
            "kernel_sum": float(self.kernel_sum),
            "normalized": bool(self.normalize),
            "padded_psf_size": int(fit.padded_size),
            "basis_sigmas": [float(s) for s in (basis.sigmas if basis is not None else ())],
            "basis_degrees": [int(d) for d in (basis.degrees if basis is not None else ())],
            "regularization_lambda": float(self.regularization_lambda),
            "regularization": float(self.regularization),
            "window": str(self.window),
            "penalty": str(self.penalty),
            "source_psf": info["source_psf"],
            "target_psf": info["target_psf"],
            "target_fwhm": float(fwhm_of(target_centre)),
            "deconvolution": bool(info["deconvolution"]),
            "condition_number": float(fit.condition_number),
            **summarize_quality(quality),
        }
        km = MatchingKernelModel.from_arrays(
            fit.kernel.term_kernels,
            spatial_order=fit.kernel.order,
            domain=fit.kernel.domain,
            target_psf=target_centre,
            cell_x=fit.cell_x,
            cell_y=fit.cell_y,
            grid_x=gxx,
            grid_y=gyy,
            basis=fit.basis.images if has_basis else None,
            coefficients=fit.coefficients if has_basis else None,
            quality=quality,
            psfmatch=meta,
        )
        self.record_stmatch(km)
        return km


#: Most cells where the deconvolution guard and the quality metrics are evaluated
#: (spread evenly over the cells, always including the first and the last).
MAX_CHECKED_CELLS = 64


def _spread(cx, cy, most):
    """Indices of at most ~``most`` cells on a sub-grid of the cell grid (rows and
    columns spread evenly, the outer ones kept)."""
    if cx.size <= most:
        return np.arange(cx.size)
    per_axis = max(2, int(np.sqrt(most)))
    keep = []
    for values in (cx, cy):
        u = np.unique(values)
        take = np.unique(np.round(np.linspace(0, u.size - 1, min(per_axis, u.size))).astype(int))
        keep.append(u[take])
    return np.nonzero(np.isin(cx, keep[0]) & np.isin(cy, keep[1]))[0]


def _log_summary(s):
    log.info(
        "Kernel quality: D <= %.3g (off-grid %.3g), W- <= %.3g, max EE difference %.3g "
        "(off-grid %.3g), kernel sum %.6g..%.6g, centroid offset <= %.3g px, noise gain %.3g..%.3g",
        s["max_aniano_d"],
        s.get("max_aniano_d_off_grid", float("nan")),
        s["max_w_minus"],
        s["max_ee_difference"],
        s.get("max_ee_difference_off_grid", float("nan")),
        s["kernel_sum_min"],
        s["kernel_sum_max"],
        s["max_centroid_offset"],
        s["noise_gain_min"],
        s["noise_gain_max"],
    )
    if s["max_w_minus"] > 0.5:
        log.warning(
            "W- = %.3g > 0.5: the kernel has strong negative lobes (unsafe, Aniano et al. 2011)",
            s["max_w_minus"],
        )
