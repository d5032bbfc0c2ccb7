"""Shared fixtures: small synthetic mosaics written to disk once per session."""

import os

import pytest

# Tests never talk to CRDS; make sure an accidental query could not reach a server.
os.environ.setdefault("CRDS_SERVER_URL", "https://crds.invalid")


@pytest.fixture(scope="session")
def mosaic_3x3(tmp_path_factory):
    """A 3×3 mosaic of 128² NIRCam-like images with known skies, on disk."""
    from stmatch.datasets import make_mosaic, write_mosaic

    mosaic = make_mosaic(
        3,
        3,
        shape=(128, 128),
        overlap=0.25,
        sky_range=(1.0, 8.0),
        n_diffuse=1,
        diffuse_amplitude=2.0,
        nan_patches=1,
        dq_fraction=0.001,
        seed=11,
    )
    directory = tmp_path_factory.mktemp("mosaic3x3")
    asn = write_mosaic(mosaic, directory, asn_name="m3_asn.json", product_name="m3")
    return asn, mosaic


@pytest.fixture(scope="session")
def mosaic_groups(tmp_path_factory):
    """Four exposures of two detectors each (group_id per exposure)."""
    from stmatch.datasets import make_mosaic, write_mosaic

    mosaic = make_mosaic(
        2, 2, shape=(96, 96), overlap=0.3, detectors_per_group=2, sky_range=(1.0, 8.0), seed=12
    )
    directory = tmp_path_factory.mktemp("mosaic_groups")
    asn = write_mosaic(mosaic, directory, asn_name="g_asn.json", product_name="g")
    return asn, mosaic


@pytest.fixture(scope="session")
def mosaic_split(tmp_path_factory):
    """Two disconnected sub-mosaics of 2×2 exposures each."""
    from stmatch.datasets import make_mosaic, write_mosaic

    mosaic = make_mosaic(
        4, 2, shape=(96, 96), overlap=0.3, n_components=2, sky_range=(1.0, 8.0), seed=13
    )
    directory = tmp_path_factory.mktemp("mosaic_split")
    asn = write_mosaic(mosaic, directory, asn_name="s_asn.json", product_name="s")
    return asn, mosaic


@pytest.fixture(scope="session")
def dask_cluster():
    """A LocalCluster of 2 single-threaded worker processes on loopback (per test session).

    Yields its scheduler address (what the ``scheduler`` parameter takes). Tests that
    kill workers start a cluster of their own (``tests._dask.local_cluster``).
    """
    pytest.importorskip("distributed")
    from tests._dask import local_cluster

    with local_cluster(2) as cluster:
        yield cluster.scheduler_address
