"""Run every benchmark present, repeated, each figure beside its raw limit; write the summary.

    python -m bench [--quick] [--only ingest,scaling] [--repeat N]

Benchmarks are modules `bench/<name>.py` with `main(argv) -> dict[str, float]` and `--quick`.
A module may declare `FIGURES: list[bench.figures.Figure]` for the summary table; otherwise the
runner's defaults below are used, or every number it returns is listed. Missing modules (other
issues still in flight) are reported as "not present". Each module writes its own section of
docs/benchmarks.md from its last repeat; the runner writes the summary at the top.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

from bench.report import DOC, HEADER, machine, write_section

KNOWN = ("ingest", "scaling", "modbus", "rules", "dispatch", "api", "dashboards")


@dataclass(frozen=True, kw_only=True)
class Figure:
    """One summary row: `key` of the result beside `raw_key` (same run), with its target."""

    key: str
    label: str
    unit: str
    raw_key: str | None = None
    raw_label: str = ""
    scale_raw: float = 1.0  # e.g. 1/6: rows/s of COPY → six-metric messages/s
    target: str = ""
    met: Callable[[dict[str, float]], bool] | None = None


DEFAULT_FIGURES: dict[str, list[Figure]] = {
    "ingest": [
        Figure(key="messages_per_s", label="ingest MQTT→committed", unit="msg/s", raw_key="raw_paho_msgs_per_s",
               raw_label="bare paho QoS 1 subscriber", target="≥ 20,000 msg/s",
               met=lambda r: r["messages_per_s"] >= 20_000),
        Figure(key="readings_per_s", label="ingest readings", unit="rows/s", raw_key="raw_copy_rows_per_s",
               raw_label="raw binary COPY", target="≥ 30% of raw COPY",
               met=lambda r: r["readings_per_s"] >= 0.3 * r["raw_copy_rows_per_s"]),
        Figure(key="messages_per_s", label="ingest vs C client", unit="msg/s", raw_key="raw_c_msgs_per_s",
               raw_label="mosquitto_sub (C), QoS 1"),
        Figure(key="peak_rss_mb", label="hub peak RSS (ingest)", unit="MB", target="< 300 MB",
               met=lambda r: r["peak_rss_mb"] < 300),
    ],
    "scaling": [
        Figure(key="sweep_max_msgs_per_s", label="highest paced rate kept up with (≥ 98% committed)",
               unit="msg/s", raw_key="raw_paho_msgs_per_s", raw_label="bare paho subscriber drain"),
        Figure(key="sweep_p99_ms_at_top", label="p99 publish→commit at that rate", unit="ms",
               raw_key="raw_p99_ms_at_top", raw_label="bare subscriber p99", target="< 1,000 ms",
               met=lambda r: r["sweep_p99_ms_at_top"] < 1000),
        Figure(key="devices_10k_msgs_per_s", label="ingest with 10,000 devices", unit="msg/s",
               raw_key="raw_copy_rows_per_s", raw_label="raw COPY ÷ 6 metrics", scale_raw=1 / 6),
        Figure(key="rss_10k_mb", label="hub peak RSS, 10,000 devices", unit="MB", target="< 300 MB",
               met=lambda r: r["rss_10k_mb"] < 300),
        Figure(key="cpu_us_per_msg_10k", label="CPU per message, 10,000 devices", unit="µs",
               raw_key="cpu_us_per_msg_100", raw_label="same at 100 devices", target="≤ 2× the 100-device cost",
               met=lambda r: r["cpu_us_per_msg_10k"] <= 2 * r["cpu_us_per_msg_100"]),
    ],
    "modbus": [
        Figure(key="flat_out_points_per_s", label="Modbus polling flat out", unit="points/s", raw_key="raw_points_per_s",
               raw_label="bare pymodbus client loop", target="≥ 50% of raw pymodbus",
               met=lambda r: r["flat_out_points_per_s"] >= 0.5 * r["raw_points_per_s"]),
        Figure(key="start_lag_p99_ms", label="poll start lag p99, 1,000 devices at 1 s", unit="ms", target="< 250 ms",
               met=lambda r: r["start_lag_p99_ms"] < 250),
    ],
    "rules": [
        Figure(key="alarm_p99_ms", label="publish → alarm committed p99 at 20,000 msg/s", unit="ms", target="< 1,000 ms, no probe lost",
               met=lambda r: r["alarm_p99_ms"] < 1000 and r["lost_probes"] == 0 and r["offered_msgs_per_s"] >= 19_600
               and r["unstored_messages"] == 0),
        Figure(key="engine_rows_per_s", label="rule engine, default rules", unit="rows/s", raw_key="numpy_threshold_per_s",
               raw_label="bare numpy threshold (values/s)"),
        Figure(key="backtest_day_2000_s", label="backtest, a day of 2,000 lifts", unit="s", target="< 60 s",
               met=lambda r: r["backtest_day_2000_s"] < 60),
    ],
    "dispatch": [
        Figure(key="notified_p99_ms", label="alarm → notification on MQTT p99", unit="ms", raw_key="raw_mqtt_p99_ms",
               raw_label="bare MQTT publish → receive p99"),
    ],
    "api": [
        Figure(key="worst_p99_ms", label="API reads, slowest endpoint p99", unit="ms", raw_key="worst_raw_p99_ms",
               raw_label="same SQL through a pool, p99"),
    ],
    "dashboards": [
        Figure(key="worst_rollup_p95_ms", label="slowest overview panel p95 (rollups)", unit="ms", raw_key="worst_raw_p95_ms",
               raw_label="raw readings table p95", target="< 200 ms", met=lambda r: r["worst_rollup_p95_ms"] < 200),
    ],
}


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # ok | not present | failed
    runs: list[dict[str, float]]
    seconds: float
    error: str = ""


def load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            return None
        raise


def run_one(name: str, module: ModuleType, *, quick: bool, repeat: int) -> Outcome:
    takes_no_write = "--no-write" in inspect.getsource(module)
    runs: list[dict[str, float]] = []
    started = time.monotonic()
    for i in range(repeat):
        argv = ["--quick"] if quick else []
        if takes_no_write and i < repeat - 1:
            argv.append("--no-write")  # the section on disk comes from the last repeat
        print(f"== {name} ({i + 1}/{repeat}): python -m bench.{name} {' '.join(argv)}", flush=True)
        try:
            result = module.main(argv)
        except Exception:
            return Outcome(name, "failed", runs, time.monotonic() - started, traceback.format_exc(limit=3))
        runs.append({k: float(v) for k, v in (result or {}).items() if isinstance(v, int | float)})
    return Outcome(name, "ok", runs, time.monotonic() - started)


def median_spread(values: Sequence[float]) -> tuple[float, float]:
    """Median and spread as (max − min) / median."""
    med = statistics.median(values)
    return med, ((max(values) - min(values)) / med if med else 0.0)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def summary_rows(outcome: Outcome, figures: list[Figure] | None) -> list[str]:
    if outcome.status != "ok" or not outcome.runs:
        return [f"| {outcome.name} | {outcome.status} | | | | | |"]
    keys = set.intersection(*(set(r) for r in outcome.runs))
    med = {k: median_spread([r[k] for r in outcome.runs])[0] for k in keys}
    spread = {k: median_spread([r[k] for r in outcome.runs])[1] for k in keys}
    n = len(outcome.runs)
    rows = []
    if figures is None:
        figures = [Figure(key=k, label=k, unit="") for k in sorted(keys)]
    for f in figures:
        if f.key not in med:
            continue
        value = f"{_fmt(med[f.key])} {f.unit} (±{spread[f.key]:.0%}, n={n})"
        raw = ratio = ""
        if f.raw_key and f.raw_key in med and med[f.raw_key]:
            raw_value = med[f.raw_key] * f.scale_raw
            raw = f"{_fmt(raw_value)} — {f.raw_label}"
            ratio = f"{med[f.key] / raw_value:.2f}"
        met = "" if f.met is None else ("yes" if _safe(f.met, med) else "**no**")
        rows.append(f"| {outcome.name}: {f.label} | {value} | {raw} | {ratio} | {f.target} | {met} |")
    return rows


def _safe(check: Callable[[dict[str, float]], bool], values: dict[str, float]) -> bool:
    try:
        return bool(check(values))
    except (KeyError, ZeroDivisionError):
        return False


def _summary_first() -> None:
    """Make sure the summary section sits right below the header, before every bench's section."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    if "<!-- bench:summary -->" in text:
        return
    marker = "<!-- bench:summary -->\n<!-- /bench:summary -->\n"
    first = text.find("<!-- bench:")
    text = (text.rstrip() + "\n\n" + marker) if first < 0 else text[:first] + marker + "\n" + text[first:]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")


def write_summary(outcomes: list[Outcome], *, quick: bool, repeat: int, command: str) -> None:
    rows: list[str] = []
    for o in outcomes:
        module = load(o.name) if o.status == "ok" else None
        figures = getattr(module, "FIGURES", None) or DEFAULT_FIGURES.get(o.name)
        rows.extend(summary_rows(o, figures))
    kind = ("a **quick** run (`--quick`: shorter loads; the machine was shared, so the figures are "
            "indicative — the full run is `make bench` on a quiet machine)") if quick else "a full run"
    write_section("summary", f"""## Summary

From {kind}, each benchmark repeated {repeat}×: median, spread = (max − min) / median. Every
raw limit is measured in the same run, on the same machine. Reproduce with `{command}`.

| figure | median (spread, runs) | raw limit (same run) | ratio | target | met? |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Benchmarks not present yet are listed as such; their issues add `bench/<name>.py`.""")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (what CI and a busy machine can afford)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--repeat", type=int, default=None, help="repeats per benchmark (default 3 quick, 5 full)")
    ap.add_argument("--no-summary", action="store_true", help="do not rewrite the summary in docs/benchmarks.md")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(KNOWN)
    repeat = args.repeat or (3 if args.quick else 5)
    print(f"machine: {machine()}")
    outcomes: list[Outcome] = []
    for name in names:
        module = load(name)
        if module is None or not hasattr(module, "main"):
            print(f"== {name}: not present")
            outcomes.append(Outcome(name, "not present", [], 0.0))
            continue
        outcome = run_one(name, module, quick=args.quick, repeat=repeat)
        if outcome.error:
            print(f"== {name}: FAILED\n{outcome.error}", file=sys.stderr)
        outcomes.append(outcome)
    print("\nfigure | median | spread")
    for o in outcomes:
        if o.status != "ok":
            print(f"{o.name}: {o.status}")
            continue
        for key in sorted(o.runs[0]):
            med, spread = median_spread([r[key] for r in o.runs if key in r])
            print(f"{o.name}.{key} | {_fmt(med)} | ±{spread:.0%}")
    if not args.no_summary:
        _summary_first()
        command = "python -m bench" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "") \
            + (f" --repeat {args.repeat}" if args.repeat else "")
        write_summary(outcomes, quick=args.quick, repeat=repeat, command=command)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
