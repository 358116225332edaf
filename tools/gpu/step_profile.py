#!/usr/bin/env python3
"""Sums an ncu --csv --page raw run's kernel durations (gpu__time_duration.sum) per kernel
family and prints a table: launches, total us, share. Usage: step_profile.py FILE.csv"""
import csv
import re
import sys
from collections import defaultdict


def family(name: str) -> str:
    base = re.sub(r"<.*", "", name).replace("void ", "").strip()
    return re.sub(r"\(.*", "", base).split("::")[-1]


def main() -> None:
    rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
    head = rows[0]
    name_col, time_col = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
    unit = rows[1][time_col] if len(rows) > 1 else ""
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(unit, None)
    data = rows[2:] if scale is not None else rows[1:]
    scale = scale or 1e-3
    total, count = defaultdict(float), defaultdict(int)
    for r in data:
        try:
            t = float(r[time_col].replace(",", "")) * scale
        except ValueError:
            continue
        total[family(r[name_col])] += t
        count[family(r[name_col])] += 1
    s = sum(total.values())
    print(f"{'kernel':<28} {'launches':>8} {'us':>10} {'share':>7}")
    for k in sorted(total, key=total.get, reverse=True):
        print(f"{k:<28} {count[k]:>8} {total[k]:>10.1f} {100 * total[k] / s:>6.1f}%")
    print(f"{'all':<28} {sum(count.values()):>8} {s:>10.1f}")


if __name__ == "__main__":
    main()
