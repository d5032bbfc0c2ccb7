"""A gnomonic (TAN) projection in plain numpy for algorithm tests."""

import math

import numpy as np


class Tan:
    """Pixel ↔ sky for a TAN projection with pixel scale (arcsec) and rotation (deg)."""

    def __init__(self, ra0, dec0, crpix, scale=0.06, rotation=0.0):
        self.ra0 = math.radians(ra0)
        self.dec0 = math.radians(dec0)
        self.crpix = crpix
        s = math.radians(scale / 3600.0)
        c, t = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
        self.cd = np.array([[-s * c, s * t], [s * t, s * c]])
        self.icd = np.linalg.inv(self.cd)

    def fwd(self, x, y):
        x = np.asarray(x, float) - self.crpix[0]
        y = np.asarray(y, float) - self.crpix[1]
        xi = self.cd[0, 0] * x + self.cd[0, 1] * y
        eta = self.cd[1, 0] * x + self.cd[1, 1] * y
        cd0, sd0 = math.cos(self.dec0), math.sin(self.dec0)
        den = cd0 - eta * sd0
        ra = self.ra0 + np.arctan2(xi, den)
        dec = np.arctan2(sd0 + eta * cd0, np.hypot(xi, den))
        return np.degrees(ra) % 360.0, np.degrees(dec)

    def inv(self, ra, dec):
        ra = np.radians(np.asarray(ra, float))
        dec = np.radians(np.asarray(dec, float))
        cd0, sd0 = math.cos(self.dec0), math.sin(self.dec0)
        cosc = sd0 * np.sin(dec) + cd0 * np.cos(dec) * np.cos(ra - self.ra0)
        xi = np.cos(dec) * np.sin(ra - self.ra0) / cosc
        eta = (cd0 * np.sin(dec) - sd0 * np.cos(dec) * np.cos(ra - self.ra0)) / cosc
        x = self.icd[0, 0] * xi + self.icd[0, 1] * eta
        y = self.icd[1, 0] * xi + self.icd[1, 1] * eta
        return x + self.crpix[0], y + self.crpix[1]


def grid_mosaic(nx, ny, shape, *, overlap=0.2, scale=0.06, ra=150.0, dec=2.0, rotation=0.0):
    """TAN WCSs of an nx × ny grid of images sharing one tangent point."""
    h, w = shape
    step_x = w * (1 - overlap)
    step_y = h * (1 - overlap)
    wcss = []
    for j in range(ny):
        for i in range(nx):
            crpix = (
                (w - 1) / 2 - (i - (nx - 1) / 2) * step_x,
                (h - 1) / 2 - (j - (ny - 1) / 2) * step_y,
            )
            wcss.append(Tan(ra, dec, crpix, scale, rotation))
    return wcss
