"""Ingest benchmark: parse + validate + store a large task file into SQLite, against the bare openpyxl
read-only iteration of the same file (the baseline), each in its own process for a clean peak memory.

    .venv/bin/python bench/ingest.py [--rows 1000000]

The task file is written once and cached in bench/.cache (outside git).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"


def write_file(rows: int) -> Path:
    path = CACHE / f"task-{rows}.xlsx"
    if path.exists():
        return path
    from openpyxl import Workbook

    CACHE.mkdir(parents=True, exist_ok=True)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("messages")
    sheet.append(["phone", "text", "channel", "external id", "validity period"])
    for i in range(rows):
        phone = f"+7916{i % 10_000_000:07d}" if i % 100 else "bad phone"
        sheet.append([phone, f"Your code is {i % 1_000_000:06d}. Do not share it.", "sms", f"crm-{i}", 1440])
    tmp = path.with_suffix(".tmp.xlsx")
    workbook.save(tmp)
    tmp.replace(path)
    return path


def baseline(path: str, queue: multiprocessing.Queue) -> None:
    from openpyxl import load_workbook

    started = time.perf_counter()
    workbook = load_workbook(path, read_only=True)
    count = sum(1 for _ in workbook.worksheets[0].iter_rows(values_only=True))
    queue.put({"seconds": time.perf_counter() - started, "rows": count - 1, "peak_mib": _peak_mib()})


def ingest(path: str, queue: multiprocessing.Queue) -> None:
    home = tempfile.mkdtemp(prefix="notiflow-bench-")
    os.environ.update(NOTIFLOW_HOME=home, NOTIFLOW_DATABASE_URL=f"sqlite:///{home}/bench.db")
    sys.path.insert(0, str(ROOT))
    import notiflow  # noqa: F401
    from models.params import NotificationTaskParams
    from tasks.intake import intake
    from tasks.lifecycle import open_task

    task_id = open_task.fn(NotificationTaskParams(task_file=path), str(uuid.uuid4()))
    started = time.perf_counter()
    result = intake.fn(task_id)
    queue.put({"seconds": time.perf_counter() - started, "rows": result.accepted + result.rejected,
               "accepted": result.accepted, "rejected": result.rejected, "peak_mib": _peak_mib()})


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(target, path: Path) -> dict:  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(str(path), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    path = write_file(args.rows)
    base = measure(baseline, path)
    ours = measure(ingest, path)
    report = {
        "rows": args.rows,
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "baseline_openpyxl_read_s": round(base["seconds"], 1),
        "baseline_peak_mib": round(base["peak_mib"]),
        "ingest_s": round(ours["seconds"], 1),
        "ingest_rows_per_s": round(ours["rows"] / ours["seconds"]),
        "ingest_peak_mib": round(ours["peak_mib"]),
        "accepted": ours["accepted"],
        "rejected": ours["rejected"],
        "speed_ratio_vs_baseline": round(base["seconds"] / ours["seconds"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
