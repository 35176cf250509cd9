"""Scaling curves of the ingest path, each beside its raw limit measured in the same run.

- load sweep: paced QoS 1 publishers at rising offered rates; achieved throughput and
  publish→commit latency percentiles of the hub, beside a bare paho subscriber's delivery
  latency at the same rate and its maximum drain rate;
- device sweep (100 → 10,000 devices): `hub run` draining a backlog (bench.ingest.hub_drain):
  ingest rate, CPU per message, hub RSS idle and peak, per-device memory.

Usage: python -m bench.scaling [--quick] [--no-write]; plots go to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.loadgen import METRICS, Load, PacedPublishers, write_registry

PLOTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


# -- paced publishers (their own process: the hub runs threads in this one) -------------------
PUBLISHERS = 1000  # every device of the sweep publishes


def six_metrics(k: int, ts_ms: float) -> dict[str, object]:
    out: dict[str, object] = {"ts": ts_ms, "seq": k}
    for i, name in enumerate(METRICS):
        out[name] = float((k + i) % 100)
    return out


def paced_publish(host: str, port: int, load: Load, rate: float, seconds: float) -> int:
    """Publish six-metric telemetry at `rate` msg/s for `seconds`; returns messages sent."""

    topics = [load.topic(d) for d in range(min(PUBLISHERS, load.devices))]
    publishers = PacedPublishers(port, topics, six_metrics, host=host, name="sweep")
    publishers.start(rate)
    time.sleep(seconds)
    publishers.stop()
    return publishers.sent


# -- the hub in this process, with a listener timing every committed message -----------------
class LatencyProbe:
    """After each commit: latency of every message (commit time − device timestamp)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: list[float] = []
        self.messages = 0
        self.first_at = 0.0  # first and last commit holding probe messages
        self.last_at = 0.0

    def __call__(self, committed: Any) -> None:
        at = committed.committed_at.timestamp()
        first = METRICS[0]
        lat = [at - r[0].timestamp() for r in committed.batch.readings if r[2] == first]
        with self.lock:
            self.samples.extend(lat)
            self.messages += len(lat)
            if lat:
                self.first_at = self.first_at or at
                self.last_at = at

    def take(self) -> tuple[list[float], int]:
        with self.lock:
            out, n = self.samples, self.messages
            self.samples, self.messages = [], 0
        return out, n

    def reset(self) -> None:
        with self.lock:
            self.samples, self.messages, self.first_at, self.last_at = [], 0, 0.0, 0.0


class InProcessHub:
    def __init__(self, db_url: str, broker_url: str, registry: Path, *, client_id: str) -> None:
        from hub.config import load_settings
        from hub.runtime import HubRuntime

        settings = load_settings(None, database_url=db_url, mqtt_url=broker_url, registry=registry,
                                 mqtt_client_id=client_id, api_enabled=False, log_level="WARNING")
        self.runtime = HubRuntime(settings, components=[], worker=client_id)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.probe = LatencyProbe()

    def __enter__(self) -> InProcessHub:
        from hub.runtime import tune_gc

        tune_gc()  # as `hub run` configures its process
        self.thread.start()
        ctx = asyncio.run_coroutine_threadsafe(self.runtime.start(), self.loop).result(120)
        ctx.pipeline.add_listener(self.probe)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runtime.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class RawSubscriber:
    """A bare paho QoS 1 subscriber timing delivery (receive time − device timestamp)."""

    def __init__(self, host: str, port: int) -> None:
        self.samples: list[float] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-lat-{time.time_ns()}", clean_session=True)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe("facility/+/+/telemetry", 1)
        time.sleep(0.3)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        ts = orjson.loads(msg.payload)["ts"]
        self.samples.append(time.time() - ts / 1000)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    p50, p95, p99 = np.percentile(np.asarray(samples) * 1000, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


@dataclass(frozen=True)
class LoadPoint:
    offered: float
    hub_rate: float
    hub: dict[str, float]
    raw: dict[str, float]


def load_sweep(rates: Sequence[float], seconds: float, *, db_url: str, broker_host: str, broker_port: int,
               broker_url: str, workdir: Path) -> list[LoadPoint]:
    load = Load(site="sweep", devices=1000, messages=1, metrics=len(METRICS))
    registry = write_registry(load, workdir / "sweep.yaml")
    points: list[LoadPoint] = []
    for step, rate in enumerate(rates):
        raw = RawSubscriber(broker_host, broker_port)
        paced_publish(broker_host, broker_port, load, rate, seconds)
        time.sleep(0.5)
        raw.close()
        raw_lat = percentiles(raw.samples)
        # a new session per step: the previous step's raw phase must not queue for this hub
        with InProcessHub(db_url, broker_url, registry, client_id=f"bench-scaling-{step}-{time.time_ns()}") as hub:
            hub.probe.reset()
            sent = paced_publish(broker_host, broker_port, load, rate, seconds)
            deadline = time.monotonic() + 60
            got: list[float] = []
            n = 0
            while n < sent and time.monotonic() < deadline:
                time.sleep(0.1)
                more, k = hub.probe.take()
                got.extend(more)
                n += k
            # committed messages over the span from first to last commit (publishers' start-up excluded)
            span = max(hub.probe.last_at - hub.probe.first_at, 1e-3)
        point = LoadPoint(offered=sent / seconds, hub_rate=(n - 1) / span if n > 1 else 0.0, hub=percentiles(got), raw=raw_lat)
        print(f"  offered {point.offered:,.0f} msg/s → hub {point.hub_rate:,.0f} msg/s; latency p50/p95/p99 "
              f"{point.hub['p50']:.0f}/{point.hub['p95']:.0f}/{point.hub['p99']:.0f} ms "
              f"(bare subscriber {raw_lat['p50']:.0f}/{raw_lat['p95']:.0f}/{raw_lat['p99']:.0f} ms)")
        points.append(point)
    return points


def device_sweep(counts: Sequence[int], messages: int, *, broker_url: str, broker_port: int, workdir: Path) -> list[dict[str, float]]:
    from bench.ingest import fresh_database, hub_drain

    out: list[dict[str, float]] = []
    for n in counts:
        load = Load(site="devs", devices=n, messages=max(messages, 2 * n), metrics=len(METRICS))
        url = fresh_database("hub_bench_scaling")
        registry = write_registry(load, workdir / f"devs-{n}.yaml")
        r = hub_drain(url, broker_url, "127.0.0.1", broker_port, load, registry, workdir)
        r["devices"] = float(n)
        # marginal memory per device, against the smallest registry of the sweep
        r["kb_per_device"] = ((r["idle_rss_mb"] - out[0]["idle_rss_mb"]) * 1024 / (n - out[0]["devices"])) if out else 0.0
        print(f"  {n:,} devices: {r['messages_per_s']:,.0f} msg/s, {r['cpu_us_per_message']:.0f} µs CPU/msg, "
              f"RSS idle {r['idle_rss_mb']:.0f} MB / peak {r['peak_rss_mb']:.0f} MB")
        out.append(r)
    return out


# -- plots -------------------------------------------------------------------------------------
def plot(points: list[LoadPoint], devices: list[dict[str, float]], raw_drain: float, raw_copy_msgs: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = PLOTS / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)

    if points:
        offered = [p.offered for p in points]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(offered, [p.hub_rate for p in points], "o-", label="hub: committed msg/s")
        ax.plot(offered, offered, ":", color="grey", label="offered")
        if raw_drain:
            ax.axhline(raw_drain, color="tab:red", ls="--", label=f"raw paho subscriber max ({raw_drain:,.0f})")
        if raw_copy_msgs:
            ax.axhline(raw_copy_msgs, color="tab:green", ls="--", label=f"raw COPY ÷ 6 metrics ({raw_copy_msgs:,.0f})")
        ax.set_xlabel("offered load (QoS 1 msg/s)")
        ax.set_ylabel("msg/s")
        ax.set_ylim(bottom=0)
        ax.set_title("Throughput vs load")
        ax.legend(fontsize=8)
        save(fig, "throughput_vs_load.png")

        fig, ax = plt.subplots(figsize=(6.5, 4))
        for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
            ax.plot(offered, [p.hub[q] for p in points], style, label=f"hub {q} (publish → commit)")
            ax.plot(offered, [p.raw[q] for p in points], style[0] + "--", alpha=0.4, label=f"bare subscriber {q}")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (QoS 1 msg/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title("Latency percentiles vs load")
        ax.legend(fontsize=7)
        save(fig, "latency_vs_load.png")

    if devices:
        n = [d["devices"] for d in devices]
        fig, ax1 = plt.subplots(figsize=(6.5, 4))
        ax1.plot(n, [d["messages_per_s"] for d in devices], "o-", color="tab:blue", label="ingest msg/s")
        ax1.set_xscale("log")
        ax1.set_xlabel("devices")
        ax1.set_ylabel("msg/s", color="tab:blue")
        ax2 = ax1.twinx()
        ax2.plot(n, [d["cpu_us_per_message"] for d in devices], "s--", color="tab:orange", label="CPU µs / message")
        ax2.set_ylabel("hub CPU µs per message", color="tab:orange")
        ax1.set_ylim(bottom=0)
        ax2.set_ylim(bottom=0)
        ax1.set_title("Cost growth with devices")
        save(fig, "cost_vs_devices.png")

        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(n, [d["idle_rss_mb"] for d in devices], "o-", label="hub RSS idle (registry loaded)")
        ax.plot(n, [d["peak_rss_mb"] for d in devices], "s-", label="hub RSS peak while draining")
        ax.set_xscale("log")
        ax.set_xlabel("devices")
        ax.set_ylabel("MB")
        ax.set_ylim(bottom=0)
        ax.set_title("Memory vs devices")
        ax.legend(fontsize=8)
        save(fig, "memory_vs_devices.png")
    return files


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short steps and fewer points")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    from bench.ingest import fresh_database, raw_copy, raw_paho_drain
    from bench.report import write_section
    from hub.embedded.broker import MosquittoProcess

    rates = [1000, 5000, 10000] if args.quick else [2500, 5000, 10000, 15000, 20000, 25000]
    seconds = 4.0 if args.quick else 15.0
    counts = [100, 1000, 10000]
    messages = 20_000 if args.quick else 200_000
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        workdir = Path(tmp)
        broker = MosquittoProcess(workdir / "mosquitto")
        broker.start()
        try:
            print("load sweep (1,000 devices):")
            url = fresh_database("hub_bench_sweep")
            points = load_sweep(rates, seconds, db_url=url, broker_host="127.0.0.1", broker_port=broker.port,
                                broker_url=broker.url, workdir=workdir)
            raw_load = Load(site="sweep", devices=1000, messages=messages // 2, metrics=len(METRICS))
            raw_drain = raw_paho_drain("127.0.0.1", broker.port, raw_load)
            copy_rows = raw_copy(url, raw_load)
            print(f"  raw paho drain {raw_drain:,.0f} msg/s; raw COPY {copy_rows:,.0f} rows/s")
            print("device sweep:")
            devices = device_sweep(counts, messages, broker_url=broker.url, broker_port=broker.port, workdir=workdir)
        finally:
            broker.stop()
    files = [] if args.no_plots else plot(points, devices, raw_drain, copy_rows / len(METRICS))
    # The highest offered rate the hub kept up with (a saturated step's latency only measures
    # its growing backlog); the highest committed rate if it kept up with none.
    kept_up = [p for p in points if p.hub_rate >= 0.98 * p.offered]
    top = max(kept_up or points, key=lambda p: p.hub_rate)
    result = {
        "sweep_max_msgs_per_s": top.hub_rate, "raw_paho_msgs_per_s": raw_drain,
        "sweep_p99_ms_at_top": top.hub["p99"], "raw_p99_ms_at_top": top.raw["p99"],
        "devices_10k_msgs_per_s": devices[-1]["messages_per_s"], "devices_100_msgs_per_s": devices[0]["messages_per_s"],
        "rss_10k_mb": devices[-1]["peak_rss_mb"], "kb_per_device_10k": devices[-1]["kb_per_device"],
        "cpu_us_per_msg_10k": devices[-1]["cpu_us_per_message"], "cpu_us_per_msg_100": devices[0]["cpu_us_per_message"],
        "raw_copy_rows_per_s": copy_rows,
    }
    if not args.no_write:
        rows = "\n".join(
            f"| {p.offered:,.0f} | {p.hub_rate:,.0f} | {p.hub['p50']:.0f} / {p.hub['p95']:.0f} / {p.hub['p99']:.0f} | "
            f"{p.raw['p50']:.1f} / {p.raw['p95']:.1f} / {p.raw['p99']:.1f} |" for p in points)
        drows = "\n".join(
            f"| {d['devices']:,.0f} | {d['messages_per_s']:,.0f} | {d['messages_per_s'] * 6 / copy_rows:.0%} | "
            f"{d['cpu_us_per_message']:.0f} | {d['idle_rss_mb']:.0f} / {d['peak_rss_mb']:.0f} | {d['kb_per_device']:.1f} |"
            for d in devices)
        pics = "\n".join(f"![{f.stem}](benchmarks/{f.name})" for f in files)
        write_section("scaling", f"""## Scaling: throughput, latency, devices, memory (issue #9)

Command: `python -m bench.scaling{' --quick' if args.quick else ''}` ({'quick run: ' if args.quick else ''}{seconds:.0f} s per load step,
{messages:,}-message backlogs per device count). Raw limits in the same run: a bare paho QoS 1
subscriber drains **{raw_drain:,.0f} msg/s**; raw binary COPY **{copy_rows:,.0f} rows/s**
(= {copy_rows / 6:,.0f} six-metric messages/s).

Load sweep, registry of 1,000 devices, {PUBLISHERS} of them publishing at a paced rate in total
(QoS 1, pre-framed PUBLISH packets written in bulk from a separate process, a few µs a message, so the publishers are not the limit). Latency = commit time − device timestamp; the bare
subscriber's is delivery time − device timestamp at the same rate (the broker's own floor).
The hub batches for up to 200 ms by design (`ingest.batch_ms`).

| offered msg/s | hub committed msg/s | hub latency p50 / p95 / p99 ms | bare subscriber p50 / p95 / p99 ms |
|---|---|---|---|
{rows}

Device sweep: `hub run` draining a backlog (as `bench.ingest`), registry of N devices, backlog of
max({messages:,}, 2 × N) messages: with 10,000 devices each sends only a few messages, so much of
the backlog is a device's first message (its `device_status` row is written), the costliest kind.

| devices | hub msg/s | readings vs raw COPY | hub CPU µs / msg | RSS idle / peak MB | marginal KB / device (vs first row) |
|---|---|---|---|---|---|
{drows}

{pics}""")
    return result


if __name__ == "__main__":
    main()
