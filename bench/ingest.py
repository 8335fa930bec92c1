"""Ingest benchmark: parse + validate + store a large task file into SQLite, against the bare openpyxl
read-only iteration of the same file (the baseline), each in its own process for a clean peak memory.

    .venv/bin/python bench/ingest.py [--rows 1000000] [--pairs 3] [--form inline|shared]

The file is written by openpyxl (`inline`, each text in its cell, as the issue's figures were measured)
or converted to what Excel saves (`shared`, every text once in the shared-strings table), which
openpyxl reads about 1.7 times faster and the intake at the same speed.

This machine's speed drifts by a third or more within minutes (another tenant's load), so the
baseline and the ingest are measured in pairs, one right after the other, several times; the pair
with the median ratio is reported, with every pair's figures beside it.

The task file is written once and cached in bench/.cache (outside git). Peak memory is the largest
sum of the resident sizes of the measured process and every process it started (the intake's
workers), sampled every 100 ms; the measured process's own peak is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"


# The columns customers fill (spec params.md), as they fill them: phones written every way Excel and
# people write them, e-mails, texts with {placeholders} filled from JSON variables, Cyrillic and emoji,
# `send at` as text and as Excel date cells, time windows, booleans in every accepted spelling,
# priorities and callback URLs. Most cells of the optional columns are empty, as in real files.
HEADER = ["phone", "email", "channel", "text", "variables", "external id", "unique message id", "send at",
          "allowed time ranges", "validity period", "priority", "callback url", "callback data", "use short links",
          "force send", "required", "bulk id"]
TEXTS = [
    "Your code is {code}. Do not share it.",
    "Здравствуйте, {name}! Ваш заказ №{order} готов к выдаче 📦",
    "{name}, скидка 20% только сегодня 🔥 Подробнее: https://shop.example.com/sale",
    "Hello {name}, your parcel {order} arrives tomorrow between 10:00 and 14:00 🚚",
    "Напоминаем: запись к врачу завтра в 09:30. Ответьте 1 для подтверждения.",
]
BOOLEANS = [True, False, "true", "FALSE", "1", "0", 1, 0, "yes", "no", "Y", "n", "on", "off", "да", "нет"]
WINDOWS = ['[["09:00:00", "13:00:00"], ["14:00:00", "20:00:00"]]', '["10:00", "18:00"]', '{"09:30:00", "21:00:00"}']


def _phone(i: int) -> Any:
    """A Russian mobile number written one of the ways task files hold them, or an international one."""
    national = f"9{(i * 7919) % 1_000_000_000:09d}"
    kind = i % 10
    if kind == 0:
        return int("7" + national)  # a numeric cell
    if kind == 1:
        return f"8 ({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]}"
    if kind == 2:
        return f"+7\u00a0{national[:3]}\u00a0{national[3:6]}\u00a0{national[6:8]}\u00a0{national[8:]}"
    if kind == 3:
        return f"7.{national}E10"  # scientific notation with every digit kept (a text cell)
    if kind == 4:
        return f"+44 7{(i * 31) % 1_000_000_000:09d}"if i % 20 == 4 else f"+49 151 {(i * 13) % 100_000_000:08d}"
    if kind == 5:
        return float("7" + national)  # a numeric cell read as a float
    return "+7" + national


def _row(i: int) -> list[Any]:
    from datetime import datetime, timedelta

    channel = "email" if i % 20 == 7 else "viber" if i % 20 == 11 else "sms"
    template = TEXTS[i % len(TEXTS)]
    variables = json.dumps({"code": f"{i % 1_000_000:06d}", "name": ["Анна", "Ivan", "Мария", "Chen"][i % 4], "order": f"A-{i}"},
                           ensure_ascii=False)
    send_at: Any = None
    if i % 4 == 1:
        send_at = f"26-12-{1 + i % 28:02d} {9 + i % 10:02d}:{i % 60:02d}:00"
    elif i % 4 == 2:
        send_at = datetime(2026, 12, 1, 10) + timedelta(minutes=i % 10_000)  # an Excel date cell
    row = [
        _phone(i) if channel != "email" else None,
        f"client{i}@example.com" if channel == "email" else None,
        channel,
        template,
        variables,
        f"crm-{i}",
        f"order-{i}" if i % 5 == 0 else None,
        send_at,
        WINDOWS[i % len(WINDOWS)] if i % 3 == 0 else None,
        [1440, 60, "720", None][i % 4],
        ["high", "normal", "low", None, "Normal"][i % 5],
        f"https://crm.example.com/hooks/status?client={i % 1000}" if i % 2 else None,
        '{"campaign": "winter", "batch": %d}' % (i % 100) if i % 6 == 0 else None,
        BOOLEANS[i % len(BOOLEANS)],
        BOOLEANS[(i * 7) % len(BOOLEANS)] if i % 3 else None,
        BOOLEANS[(i * 3) % len(BOOLEANS)] if i % 4 == 3 else None,
        f"bulk-{i // 10_000}",
    ]
    # About 1.5% of the rows are refused, each for one of the usual reasons.
    bad = i % 400
    if bad == 13:
        row[0] = "+7 916 123"  # too short
    elif bad == 37:
        row[0] = "bad phone"
    elif bad == 71:
        row[4] = '{"name": "Анна"'  # broken JSON
    elif bad == 101:
        row[9] = 5000  # validity period out of range
    elif bad == 151:
        row[7] = "31.02.2026 25:00"  # not a date
    elif bad == 389:
        row[8] = '[["20:00:00", "09:00:00"]]'  # a window that ends before it starts
    return row


def write_file(rows: int, form: str = "inline") -> Path:
    """The bench file, as Excel saves it (`shared`: every text once in the shared-strings table) or as
    openpyxl writes it (`inline`: each text in its cell)."""
    path = CACHE / f"task-v3-{rows}.xlsx"
    if not path.exists():
        from openpyxl import Workbook

        CACHE.mkdir(parents=True, exist_ok=True)
        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet("messages")
        sheet.append(HEADER)
        for i in range(rows):
            sheet.append(_row(i))
        tmp = path.with_suffix(".tmp.xlsx")
        workbook.save(tmp)
        tmp.replace(path)
    if form == "inline":
        return path
    shared = CACHE / f"task-v3-{rows}-shared.xlsx"
    if not shared.exists():
        sys.path.insert(0, str(ROOT))
        from tests.files import with_shared_strings

        tmp = shared.with_suffix(".tmp.xlsx")
        with_shared_strings(path, tmp)
        tmp.replace(shared)
    return shared


def baseline(path: str, queue: Any) -> None:
    from openpyxl import load_workbook

    started = time.perf_counter()
    workbook = load_workbook(path, read_only=True)
    count = sum(1 for _ in workbook.worksheets[0].iter_rows(values_only=True))
    queue.put({"seconds": time.perf_counter() - started, "rows": count - 1, "own_peak_mib": _peak_mib()})


def ingest(path: str, queue: Any) -> None:
    home = tempfile.mkdtemp(prefix="notiflow-bench-")
    # The bench file lives in its cache folder: that is the upload folder task files must come from.
    os.environ.update(NOTIFLOW_HOME=home, NOTIFLOW_DATABASE_URL=f"sqlite:///{home}/bench.db", NOTIFLOW_UPLOAD_DIR=str(CACHE))
    sys.path.insert(0, str(ROOT))
    import notiflow  # noqa: F401
    from models.params import NotificationTaskParams
    from tasks.control.lifecycle import open_task
    from tasks.intake.intake import intake

    task_id = open_task.fn(NotificationTaskParams(task_file=path), str(uuid.uuid4()))
    started = time.perf_counter()
    result = intake.fn(task_id)
    queue.put({"seconds": time.perf_counter() - started, "rows": result.accepted + result.rejected,
               "accepted": result.accepted, "rejected": result.rejected, "own_peak_mib": _peak_mib()})


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


def _machine_busy_seconds() -> float:
    """CPU time every process on the machine has used since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as handle:
        ticks = [int(t) for t in handle.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: list[int], seen: dict[int, float]) -> None:
    """Record each process's CPU time so far (/proc/<pid>/stat utime + stime) in `seen`.

    The intake's workers are forked by a fork server, not by the measured process, so the
    measured process's children's rusage does not include them; sampling the tree does (less the
    last tenth of a second of each process)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        seen[pid] = max(seen.get(pid, 0.0), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(target: Callable[[str, Any], None], path: Path) -> dict[str, Any]:
    """Run `target` in a fresh process; also how much CPU other processes on the machine took meanwhile."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(str(path), queue))
    busy_before, ours_before, started = _machine_busy_seconds(), _children_cpu_seconds(), time.perf_counter()
    process.start()
    assert process.pid is not None
    peak = 0.0
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        tick = 0
        while not done.is_set():
            if tick % 10 == 0:  # the processes of the tree change rarely; listing /proc costs
                tree = _tree(process.pid)  # type: ignore[arg-type]
            peak = max(peak, _rss_mib(tree))
            _cpu_seconds(tree, cpu)
            tick += 1
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = queue.get()
    done.set()
    sampler.join()
    process.join()
    wall = time.perf_counter() - started
    cpu_s = max(sum(cpu.values()), _children_cpu_seconds() - ours_before)
    others = (_machine_busy_seconds() - busy_before) - cpu_s
    return {**result, "peak_mib": max(peak, result["own_peak_mib"]), "cpu_s": cpu_s,
            "others_cores": max(others, 0.0) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=3, help="baseline-then-ingest measurements, one after the other")
    parser.add_argument("--form", choices=("inline", "shared"), default="inline",
                        help="texts in a shared-strings table as Excel saves them, or inline in their cells as openpyxl writes them")
    args = parser.parse_args()
    path = write_file(args.rows, args.form)
    pairs = []
    for number in range(1, args.pairs + 1):
        base, ours = measure(baseline, path), measure(ingest, path)
        pairs.append((base, ours))
        print(f"pair {number}: baseline {base['seconds']:.1f} s, ingest {ours['seconds']:.1f} s, "
              f"ratio {base['seconds'] / ours['seconds']:.2f}x, ingest peak {ours['peak_mib']:.0f} MiB", flush=True)
    ratios = [base["seconds"] / ours["seconds"] for base, ours in pairs]
    # The pair with the median ratio stands for the run; every pair is reported beside it.
    base, ours = pairs[ratios.index(statistics.median_low(ratios))]
    report = {
        "rows": args.rows,
        "form": args.form,
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "baseline_openpyxl_read_s": round(base["seconds"], 1),
        "baseline_peak_mib": round(base["peak_mib"]),
        "ingest_s": round(ours["seconds"], 1),
        "ingest_rows_per_s": round(ours["rows"] / ours["seconds"]),
        "ingest_peak_mib": round(max(o["peak_mib"] for _, o in pairs)),
        "ingest_main_process_peak_mib": round(max(o["own_peak_mib"] for _, o in pairs)),
        "accepted": ours["accepted"],
        "rejected": ours["rejected"],
        "speed_ratio_vs_baseline": round(base["seconds"] / ours["seconds"], 2),
        "pairs": [{"baseline_s": round(b["seconds"], 1), "ingest_s": round(o["seconds"], 1), "ratio": round(r, 2),
                   # CPU seconds of the ingest process, its fork server and workers, from start to exit (imports included).
                   "ingest_cpu_s": round(o["cpu_s"], 1),
                   # Cores other processes kept busy on average while each measurement ran (0 on a quiet machine).
                   "other_processes_cores": {"baseline": round(b["others_cores"], 2), "ingest": round(o["others_cores"], 2)}}
                  for (b, o), r in zip(pairs, ratios, strict=True)],
    }
    print(json.dumps(report, indent=2))
    command = "`.venv/bin/python bench/ingest.py" + ("" if args.rows == 1_000_000 else f" --rows {args.rows}") + \
        ("" if args.pairs == 3 else f" --pairs {args.pairs}") + ("" if args.form == "inline" else f" --form {args.form}") + "`"
    bad = ours["rejected"] / max(ours["rows"], 1)
    print("\nTable row for bench/RESULTS.md (the median pair; every pair's ratio in the last column):")
    print(f"| {date.today().isoformat()} | {command} | {args.rows:,} ({bad:.1%} bad) "
          f"| {base['seconds']:.1f} s, {base['peak_mib']:.0f} MiB | {ours['seconds']:.1f} s | {report['ingest_rows_per_s']:,} "
          f"| {report['ingest_peak_mib']} MiB (main process {report['ingest_main_process_peak_mib']} MiB) "
          f"| {report['speed_ratio_vs_baseline']:.2f}× ({', '.join(f'{r:.2f}' for r in ratios)}) |")


if __name__ == "__main__":
    main()
