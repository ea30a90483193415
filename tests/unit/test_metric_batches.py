"""Batched metric updates: counts and histograms written once per batch or loop tick equal what
per-task updates would have written."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from ioswarm.config import CoordinatorConfig
from ioswarm.coordinator.metrics import LATENCY_BUCKETS, HistogramBatch
from ioswarm.coordinator.service import Coordinator
from ioswarm.core.models import Level, Task
from ioswarm.proto import ioswarm_pb2 as pb

VALUES = st.one_of(
    st.sampled_from([0.0, *LATENCY_BUCKETS, 11.0, -0.5]),
    st.floats(min_value=-1.0, max_value=20.0, allow_nan=False),
)


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value  # type: ignore[misc]
        for family in registry.collect()
        if family.name == name
        for s in family.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(st.lists(VALUES, max_size=20), max_size=6))
def test_a_flushed_batch_equals_observing_one_by_one(batches: list[list[float]]) -> None:
    """Every bucket, the count and the sum match a histogram fed by ``observe``, values on a
    bucket's bound included, however the values were split into batches."""
    mine, theirs = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("lat_seconds", "x", ["level"], buckets=LATENCY_BUCKETS, registry=mine)
    h2 = Histogram("lat_seconds", "x", ["level"], buckets=LATENCY_BUCKETS, registry=theirs)
    batch = HistogramBatch(h1.labels(level="L1"))
    h2.labels(level="L1")  # both children exist from the start
    for values in batches:
        for v in values:
            batch.observe(v)
            h2.labels(level="L1").observe(v)
        batch.flush()
    a, b = samples(mine, "lat_seconds"), samples(theirs, "lat_seconds")
    assert a.keys() == b.keys()
    for key, value in b.items():
        assert abs(a[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_nothing_shows_before_a_flush() -> None:
    """Observations wait for the flush (so a flush that is never reached would show)."""
    registry = CollectorRegistry()
    h = Histogram("lat_seconds", "x", buckets=LATENCY_BUCKETS, registry=registry)
    batch = HistogramBatch(h)
    batch.observe(0.002)
    assert registry.get_sample_value("lat_seconds_count") == 0
    batch.flush()
    assert registry.get_sample_value("lat_seconds_count") == 1
    assert registry.get_sample_value("lat_seconds_bucket", {"le": "0.0025"}) == 1
    assert registry.get_sample_value("lat_seconds_bucket", {"le": "0.001"}) == 0


def l1_task(i: int) -> Task:
    return Task(i, i.to_bytes(32, "big"), b"raw", Level.L1, b"s" * 20, 0, 1, 30_000_000)


def test_counts_after_a_run_match_the_coordinators_totals() -> None:
    """After tasks are created, dispatched in batches and answered, the exported counters and
    histograms agree with the coordinator's own totals and with the answers' latencies."""
    config = CoordinatorConfig(
        max_agents=4, max_batch_size=8, max_inflight_per_agent=16, submit_burst=1000
    )
    registry = CollectorRegistry()
    c = Coordinator(config, node=None, registry=registry)  # type: ignore[arg-type]
    streams = {}
    for i in range(3):
        agent_id = f"agent-{i}"
        c.gateway.register(
            pb.RegisterRequest(agent_id=agent_id, capability=pb.L1, wallet_address="0x" + "1" * 40)
        )
        streams[agent_id] = c.gateway.open_stream(agent_id, pb.GetTasksRequest(agent_id=agent_id))
    reference = Histogram("ref_seconds", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    created = 0
    for round_ in range(5):
        for _ in range(20):
            created += 1
            assert c.dispatcher.submit(l1_task(created))
        c.dispatcher.step()
        for agent_id, stream in streams.items():
            while not stream.outbox.empty():
                sent = stream.outbox.get_nowait()
                assert sent is not None
                result = pb.BatchResult(agent_id=agent_id, batch_id=sent.batch_id)
                for n, t in enumerate(sent.tasks):
                    latency_us = 700 * (n + 1) * (round_ + 1)
                    result.results.add(task_id=t.task_id, valid=True, latency_us=latency_us)
                    reference.observe(latency_us / 1e6)
                c.gateway.submit(agent_id, result)
    c.dispatcher.flush_metrics()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    accepted = c.totals.results_accepted
    assert accepted == 100 == created
    assert value("ioswarm_tasks_created_total", level="L1") == created
    assert value("ioswarm_tasks_dispatched_total", level="L1") == c.dispatcher.dispatched_total
    assert value("ioswarm_results_total", level="L1", disposition="accepted") == accepted
    assert value("ioswarm_task_latency_seconds_count", level="L1") == accepted
    ref = reference.collect()[0].samples
    for s in ref:
        if s.name == "ref_seconds_bucket":
            mine = value("ioswarm_agent_validation_seconds_bucket", level="L1", le=s.labels["le"])
            assert mine == s.value, s.labels
    ref_sum = next(s.value for s in ref if s.name == "ref_seconds_sum")
    got_sum = value("ioswarm_agent_validation_seconds_sum", level="L1")
    assert got_sum is not None and abs(got_sum - ref_sum) < 1e-9
