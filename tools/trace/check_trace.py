#!/usr/bin/env python3
"""An independent reader of an asyncpf trace (`cargo xtask run --trace FILE`).

It parses the file with Python's own json module (not the runner's serde_json), validates it
against the Chrome trace-event schema beside it (trace-event.schema.json) with the
`jsonschema` package, checks what Perfetto needs of it (duration slices on one thread nest;
every flow is a chain of slices in time order, started with flow_out only and ended with
flow_in only), and prints what it counted as one JSON object, which the runner's test
compares with the run's own counters.

Usage: check_trace.py FILE
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import jsonschema

EPS = 0.0025  # µs: ts and dur are each rounded to the nanosecond


def main(path):
    doc = json.loads(Path(path).read_text())
    schema = json.loads((Path(__file__).parent / "trace-event.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    events = doc["traceEvents"]
    out = {"schema_errors": len(errors), "first_schema_error": errors[0].message if errors else None}
    names = {}
    for e in events:
        if e["ph"] == "M":
            names[(e["name"], e["pid"], e.get("tid"))] = e["args"]["name"]
    processes = {pid: name for (kind, pid, _), name in names.items() if kind == "process_name"}
    slices = [e for e in events if e["ph"] == "X"]
    # Nesting: per thread, sorted by start then longest first, a slice ends no later than its
    # parent.
    by_thread = defaultdict(list)
    for s in slices:
        by_thread[(s["pid"], s["tid"])].append(s)
    overlaps = 0
    for items in by_thread.values():
        items.sort(key=lambda s: (s["ts"], -s["dur"]))
        stack = []
        for s in items:
            end = s["ts"] + s["dur"]
            while stack and stack[-1] <= s["ts"] + EPS and not (s["dur"] == 0 and stack[-1] >= s["ts"]):
                stack.pop()
            if stack and end > stack[-1] + EPS:
                overlaps += 1
                continue
            stack.append(end)
    # Flows (v2): slices sharing a bind_id, in time order.
    flows = defaultdict(list)
    for s in slices:
        if "bind_id" in s:
            flows[s["bind_id"]].append(s)
    bad_flows = 0
    complete = 0
    steps = defaultdict(int)
    for chain in flows.values():
        # Perfetto links them in time order (ties in file order): so must the chain be.
        chain.sort(key=lambda s: s["ts"])
        ends_ok = (
            not chain[0].get("flow_in", False)
            and chain[0].get("flow_out", False)
            and chain[-1].get("flow_in", False)
            and not chain[-1].get("flow_out", False)
            and all(s.get("flow_in") and s.get("flow_out") for s in chain[1:-1])
        )
        if not ends_ok or len(chain) < 2:
            bad_flows += 1
        stages = [s["name"] for s in chain]
        for name in stages:
            steps[name] += 1
        accepted = "handler accepted" in stages
        disk = ("read completed" in stages) or ("frame wait: request completed" in stages)
        if stages[0] == "stage-2 fault" and "page_not_present" in stages and (
            "handler declined" in stages
            or (accepted and disk and "page_ready" in stages and "task woken" in stages and stages[-1] == "task running")
        ):
            complete += 1
    disk_pid = next((pid for pid, name in processes.items() if name == "backing store"), None)
    disk = [s for s in slices if s["pid"] == disk_pid and s.get("cat") == "disk"]
    out.update(
        {
            "events": len(events),
            "slices": len(slices),
            "threads": len(by_thread),
            "overlapping_slices": overlaps,
            "flows": len(flows),
            "complete_flows": complete,
            "bad_flows": bad_flows,
            "steps": dict(sorted(steps.items())),
            "disk_reads": sum(1 for s in disk if s["name"].startswith("read ")),
            "disk_writes": sum(1 for s in disk if s["name"].startswith("write-back ")),
            "disk_incomplete": sum(1 for s in disk if not s.get("args", {}).get("completed", False)),
            "dropped": doc.get("otherData", {}).get("dropped"),
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
