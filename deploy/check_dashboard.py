#!/usr/bin/env python3
"""Checks deploy/grafana/*.json against the metrics the code registers.

Every dashboard must be valid JSON with panels; every panel target's expr must
name at least one metric, and every `jct_*` name in it (less a histogram's
`_bucket`/`_count`/`_sum` suffix) must be a metric the services define as a
`pub const NAME: &str = "jct_..."` in intake-service/src/metrics.rs or
worker-service/src/metrics.rs. Every metric the code defines must be on some
dashboard. Called by deploy/check.sh:

    check_dashboard.py REPO_DIR

Prints one line per problem and exits 1 if there is any.
"""

import json
import re
import sys
from pathlib import Path

SOURCES = ["intake-service/src/metrics.rs", "worker-service/src/metrics.rs"]
DEFINED = re.compile(r'pub const [A-Z_]+: &str = "(jct_[a-z0-9_]+)";')
USED = re.compile(r"\bjct_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def defined_metrics(repo):
    names = set()
    for source in SOURCES:
        names |= set(DEFINED.findall((repo / source).read_text()))
    return names


def exprs(panels):
    for panel in panels:
        yield from exprs(panel.get("panels") or [])
        for target in panel.get("targets") or []:
            yield panel.get("title", "?"), target.get("expr", "")


def base_name(name, defined):
    if name in defined:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in defined:
            return name[: -len(suffix)]
    return None


def main():
    repo = Path(sys.argv[1])
    problems = []
    defined = defined_metrics(repo)
    if not defined:
        problems.append(f"no metric definitions found in {SOURCES}")
    used = set()
    dashboards = sorted((repo / "deploy" / "grafana").glob("*.json"))
    if not dashboards:
        problems.append("no dashboard under deploy/grafana/")
    for path in dashboards:
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"{path.name}: not valid JSON: {error}")
            continue
        panels = dashboard.get("panels") or []
        if not panels:
            problems.append(f"{path.name}: no panels")
        for title, expr in exprs(panels):
            names = USED.findall(expr)
            if not names:
                problems.append(f"{path.name}: panel {title!r}: expr names no jct_ metric: {expr!r}")
            for name in names:
                known = base_name(name, defined)
                if known is None:
                    problems.append(f"{path.name}: panel {title!r}: {name} is not a metric the code registers")
                else:
                    used.add(known)
    for name in sorted(defined - used):
        problems.append(f"{name} is registered by the code but on no dashboard")
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
