"""The task engine: in-process, threads, processes and a running dask scheduler."""

import os

import pytest

from stmatch.steps._engine import open_engine, scheduler_kind, split_evenly


def _square(x):
    return x * x


def _fail_on_three(x):
    if x == 3:
        raise RuntimeError("task 3 failed")
    return x


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "in-process"),
        ("", "in-process"),
        ("None", "in-process"),
        ("threads", "threads"),
        ("processes", "processes"),
        ("processes:3", "processes"),
        ("tcp://127.0.0.1:8786", "address"),
        ("localhost:8786", "address"),
        ("cluster.json", "file"),
    ],
)
def test_scheduler_kind(value, kind):
    assert scheduler_kind(value) == kind


@pytest.mark.parametrize("value", ["thread", "processes:0", "processes:x", "somewhere", 3])
def test_scheduler_kind_rejects_nonsense(value):
    with pytest.raises(ValueError, match="scheduler"):
        scheduler_kind(value)


def test_in_process_map_keeps_order_and_reports_progress():
    seen = []
    with open_engine(None) as engine:
        assert engine.in_process and engine.shares_memory
        out = engine.map(_square, range(5), progress=lambda d, t: seen.append((d, t)))
    assert out == [0, 1, 4, 9, 16]
    assert seen == [(k, 5) for k in range(1, 6)]


def test_missing_scheduler_file_is_a_clear_error(tmp_path):
    pytest.importorskip("distributed")
    with pytest.raises(FileNotFoundError, match="scheduler file"):
        open_engine(str(tmp_path / "nowhere.json"))


def test_threads_engine_matches_in_process():
    pytest.importorskip("distributed")
    with open_engine("threads", n_workers=2) as engine:
        assert engine.shares_memory and not engine.in_process
        assert engine.map(_square, range(7)) == [x * x for x in range(7)]


def test_cluster_map_in_order_with_scatter(dask_cluster):
    import numpy as np

    arrays = [np.full((4, 4), k, dtype=float) for k in range(6)]
    with open_engine(dask_cluster) as engine:
        assert engine.n_workers == 2
        sums = engine.map(np.sum, arrays, scatter=True, name="sum")
        squares = engine.map(_square, range(10))
    assert sums == [16.0 * k for k in range(6)]
    assert squares == [x * x for x in range(10)]


def test_task_error_propagates(dask_cluster):
    with open_engine(dask_cluster) as engine, pytest.raises(RuntimeError, match="task 3"):
        engine.map(_fail_on_three, range(6))


def test_killed_worker_is_retried(tmp_path):
    pytest.importorskip("distributed")
    from tests._dask import kill_one_worker_during, local_cluster

    marker = tmp_path / "killed"
    with local_cluster(2) as cluster:
        kill_one_worker_during(cluster, marker, "square-")
        with open_engine(cluster.scheduler_address) as engine:
            out = engine.map(_square, range(8), name="square")
    assert out == [x * x for x in range(8)]
    assert marker.exists() and marker.read_text().startswith("square-")


def test_split_evenly():
    chunks = split_evenly(list(range(10)), 3)
    assert chunks == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert split_evenly([1], 4) == [[1]]
    assert sum(split_evenly(list(range(100)), os.cpu_count() or 1), []) == list(range(100))


def test_mapper_is_none_in_process_and_maps_on_a_cluster(dask_cluster):
    with open_engine(None) as engine:
        assert engine.mapper() is None
    with open_engine(dask_cluster) as engine:
        mapper = engine.mapper(name="sq")
        assert mapper(_square, [1, 2, 3]) == [1, 4, 9]


def _slow_sum(a):
    import time

    time.sleep(0.05)
    return float(a.sum())


def test_scattered_items_survive_a_killed_worker(tmp_path):
    """Items sent ahead of their tasks (scatter) are sent again when their worker dies."""
    pytest.importorskip("distributed")
    import numpy as np

    from tests._dask import kill_one_worker_during, local_cluster

    arrays = [np.full((64, 64), k, dtype=float) for k in range(12)]
    marker = tmp_path / "killed"
    with local_cluster(2) as cluster:
        kill_one_worker_during(cluster, marker, "tilesum-")
        with open_engine(cluster.scheduler_address) as engine:
            out = engine.map(_slow_sum, arrays, scatter=True, name="tilesum")
    assert out == [4096.0 * k for k in range(12)]
    assert marker.exists()
