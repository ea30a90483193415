"""Prometheus metrics of one coordinator, on an injected registry (one registry per coordinator)."""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ioswarm import __version__
from ioswarm.core.models import Level, Task
from ioswarm.core.retention import TableSizes
from ioswarm.core.speedups import NATIVE

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Fine below 100 ms, where the targets of seen-to-result latency are.
STAGE_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
STAGES = ("seen_to_queued", "queued_to_dispatched", "dispatched_to_result", "seen_to_result")


class CoordinatorMetrics:
    """Every metric the coordinator exports; labels have bounded values."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # process_* (CPU, memory, open fds, start time) and python_info describe this process;
        # they sit on the injected registry like everything else, not on the global one.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.build_info = Info(
            "ioswarm_build",
            "The running ioswarm: version, Python, and whether the C speedups are in use.",
            registry=registry,
        )
        self.build_info.info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "speedups": "c" if NATIVE else "python",
            }
        )
        self.tasks_dispatched = Counter(
            "ioswarm_tasks_dispatched_total",
            "Tasks sent to agents (each attempt).",
            ["level"],
            registry=registry,
        )
        self.tasks_created = Counter(
            "ioswarm_tasks_created_total",
            "Tasks created from pending transactions.",
            ["level"],
            registry=registry,
        )
        self.tasks_reassigned = Counter(
            "ioswarm_tasks_reassigned_total",
            "Tasks moved to another agent after a deadline or a lost stream.",
            registry=registry,
        )
        self.tasks_dropped = Counter(
            "ioswarm_tasks_dropped_total", "Tasks given up on.", ["reason"], registry=registry
        )
        self.results = Counter(
            "ioswarm_results_total",
            "Task results received.",
            ["level", "disposition"],
            registry=registry,
        )
        self.rpc_rejected = Counter(
            "ioswarm_rpc_rejected_total",
            "RPCs refused, by method and gRPC status.",
            ["method", "code"],
            registry=registry,
        )
        self.task_latency = Histogram(
            "ioswarm_task_latency_seconds",
            "Dispatch to accepted result.",
            ["level"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        # Read from the mempool poller at scrape time (its figures are set when it is made).
        self.mempool = MempoolCollector(dict)
        registry.register(self.mempool)
        self.task_stage = Histogram(
            "ioswarm_task_stage_seconds",
            "Time of a task's stages, for accepted results: seen_to_queued (mempool seen to "
            "task made), queued_to_dispatched, dispatched_to_result, and seen_to_result.",
            ["stage", "level"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.agent_latency = Histogram(
            "ioswarm_agent_validation_seconds",
            "Validation time reported by agents.",
            ["level"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.agents = Gauge(
            "ioswarm_agents",
            "Registered agents by capability level.",
            ["level"],
            registry=registry,
        )
        self.streams = Gauge("ioswarm_task_streams", "Open GetTasks streams.", registry=registry)
        self.queue_depth = Gauge(
            "ioswarm_task_queue_depth", "Tasks waiting for an agent.", registry=registry
        )
        self.shadow = Counter(
            "ioswarm_shadow_comparisons_total",
            "Agent verdicts judged against the chain.",
            ["level", "outcome"],
            registry=registry,
        )
        self.shadow_excluded = Counter(
            "ioswarm_shadow_excluded_total",
            "Comparisons excluded as races, by reason.",
            ["level", "reason"],
            registry=registry,
        )
        self.reverify = Counter(
            "ioswarm_shadow_reverify_total",
            "Excluded executing-level comparisons by what became of them: issued as a "
            "re-verification task, or not (no_agent, no_trace, no_context, queue_full, "
            "unassigned).",
            ["result"],
            registry=registry,
        )
        self.shadow_pending = Gauge(
            "ioswarm_shadow_pending", "Verdicts waiting for their tx to land.", registry=registry
        )
        self.node_errors = Counter(
            "ioswarm_node_errors_total", "Failed node calls.", ["loop"], registry=registry
        )
        self.loop_restarts = Counter(
            "ioswarm_loop_restarts_total",
            "Coordinator loops restarted after they crashed, by loop.",
            ["loop"],
            registry=registry,
        )
        self.head_block = Gauge(
            "ioswarm_head_block", "Latest block seen by the block watcher.", registry=registry
        )
        self.node_syncing = Gauge(
            "ioswarm_node_syncing",
            "1 while polling is paused because the node lags.",
            registry=registry,
        )
        self.l4_state_checks = Counter(
            "ioswarm_l4_state_checks_total",
            "L4 agents' reported state hashes compared with the coordinator's, per new height.",
            ["result"],
            registry=registry,
        )
        self.canaries_created = Counter(
            "ioswarm_canaries_created_total",
            "Canary tasks (known answer, never broadcast) mixed into the task stream.",
            ["level"],
            registry=registry,
        )
        self.canary_verdicts = Counter(
            "ioswarm_canary_verdicts_total",
            "Agent answers to canary tasks, judged exactly.",
            ["level", "outcome"],
            registry=registry,
        )
        self.agents_throttled = Gauge(
            "ioswarm_agents_throttled",
            "Agents held to a few tasks at a time because most of their answers are declines.",
            registry=registry,
        )
        self.evictions = Counter(
            "ioswarm_agent_evictions_total",
            "Agents evicted for missed heartbeats.",
            registry=registry,
        )

    def watch_loops(self, states: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        """Export ``ioswarm_loop_up{loop}`` from ``states`` (the loop supervisor's), read at
        scrape time: 1 while the loop runs, 0 while it restarts, failed or stopped."""
        self.registry.register(_LoopStates(states))


class HistogramBatch:
    """Observations for one histogram child, gathered over a batch and written at ``flush``.

    ``Histogram.observe`` takes two locks and walks the buckets in Python on every call, a few
    microseconds a task; here an observation is one bisect and two additions, and a flush is one
    locked add per bucket that was hit. The child's bucket and sum values are reached through
    prometheus_client's own attributes (``_upper_bounds``, ``_buckets``, ``_sum``); a test
    compares the exported histogram with one fed by ``observe``, so a change there shows.
    """

    __slots__ = ("_bounds", "_child", "_counts", "_pending", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._pending = False

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose upper bound is at or above it."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._pending = True

    def flush(self) -> None:
        """Add what was observed since the last flush to the histogram."""
        if not self._pending:
            return
        buckets, counts = self._child._buckets, self._counts
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
                counts[i] = 0
        self._child._sum.inc(self._sum)
        self._sum = 0.0
        self._pending = False


class _LoopStates(Collector):
    """``ioswarm_loop_up``: read from the loop supervisor at each scrape, never stale."""

    def __init__(self, states: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "ioswarm_loop_up", "1 while the coordinator loop runs, else 0.", labels=["loop"]
        )
        for name, state in self._states().items():
            up.add_metric([name], 1.0 if state.get("state") == "running" else 0.0)
        yield up


class TableCollector(Collector):
    """Reads every in-memory table's size and bound, and the event loop's task count, at
    scrape time: ``ioswarm_table_entries{table}``, ``ioswarm_table_bound{table}``,
    ``ioswarm_asyncio_tasks``."""

    def __init__(self, tables: Callable[[], TableSizes], tasks: Callable[[], int]) -> None:
        self._tables = tables
        self._tasks = tasks

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families({}, 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families(self._tables(), self._tasks())

    @staticmethod
    def _families(tables: TableSizes, tasks: int) -> Iterator[GaugeMetricFamily]:
        entries = GaugeMetricFamily(
            "ioswarm_table_entries",
            "Entries in a long-lived in-memory table of the coordinator.",
            labels=["table"],
        )
        bound = GaugeMetricFamily(
            "ioswarm_table_bound",
            "Most entries the table may hold (from maxAgents, maxInflightPerAgent, "
            "maxTrackedTxs and the retentions).",
            labels=["table"],
        )
        for name, size in sorted(tables.items()):
            entries.add_metric([name], size.entries)
            bound.add_metric([name], size.bound)
        yield entries
        yield bound
        yield GaugeMetricFamily(
            "ioswarm_asyncio_tasks", "Tasks in the coordinator's event loop.", value=tasks
        )


class TaskStages:
    """Observes a finished task's stages in ``ioswarm_task_stage_seconds`` (each level's
    children looked up once, observations gathered in :class:`HistogramBatch` until
    :meth:`flush`)."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._children: dict[Level, tuple[HistogramBatch, ...]] = {}

    def flush(self) -> None:
        for children in self._children.values():
            for child in children:
                child.flush()

    def observe(self, task: Task, dispatched_for: float, now: float) -> None:
        """``dispatched_for``: seconds from the (last) dispatch to the result at ``now``."""
        c = self._children.get(task.level)
        if c is None:
            c = tuple(
                HistogramBatch(self._histogram.labels(stage=s, level=task.level.name))
                for s in STAGES
            )
            self._children[task.level] = c
        c[2].observe(dispatched_for)
        if task.queued_at:
            c[1].observe(max(0.0, now - dispatched_for - task.queued_at))
            if task.seen_at:
                c[0].observe(max(0.0, task.queued_at - task.seen_at))
                c[3].observe(max(0.0, now - task.seen_at))


class MempoolCollector(Collector):
    """How pending txs reach the coordinator and what preparing their tasks costs the node,
    read from the mempool poller at scrape time."""

    def __init__(self, figures: Callable[[], Mapping[str, Any]]) -> None:
        self.figures = figures

    def describe(self) -> Iterator[Metric]:
        yield from self._families({})

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.figures())

    @staticmethod
    def _families(f: Mapping[str, Any]) -> Iterator[Metric]:
        seen = CounterMetricFamily(
            "ioswarm_mempool_seen",
            "Pending txs taken in, by how they were first seen (push or poll).",
            labels=["source"],
        )
        for source, n in sorted(f.get("seen", {}).items()):
            seen.add_metric([source], n)
        yield seen
        yield CounterMetricFamily(
            "ioswarm_mempool_listings",
            "Full txpool_content listings read (every round without push, gap fills with it).",
            value=f.get("listings", 0),
        )
        yield CounterMetricFamily(
            "ioswarm_mempool_node_requests",
            "JSON-RPC requests made to take in pending txs and prepare their tasks (state "
            "reads, raw bytes, L3 prefetch); divide by ioswarm_mempool_seen_total for per tx.",
            value=f.get("requests", 0),
        )
        yield CounterMetricFamily(
            "ioswarm_mempool_node_seconds",
            "Seconds spent waiting for the node's answers to those requests.",
            value=f.get("seconds", 0.0),
        )
        yield GaugeMetricFamily(
            "ioswarm_mempool_push_up",
            "1 while the node pushes pending txs over WebSocket, else 0 (polling only).",
            value=1.0 if f.get("push_live") else 0.0,
        )
