"""Write one benchmark's section of docs/benchmarks.md without touching the others."""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

import psutil

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every figure is measured by a script under `bench/`, beside the raw limit it is bounded by
(raw broker throughput, raw binary COPY, raw pymodbus, bare numpy) in the same run, on the
machine named in each section. Reproduce one with the command in its section, or all with
`make bench` (`python -m bench`). Sections are rewritten in place by each benchmark.
"""


def machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    return f"{platform.node() or 'host'}: {psutil.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section between `<!-- bench:name -->` markers."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"<!-- bench:{name} -->\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n<!-- /bench:{name} -->"
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    return DOC
