#!/usr/bin/env python3
"""Assembles scripts/bench's results into docs/benchmarks.md and docs/benchmarks.json.

Input: one JSON object a line, {"round", "target", "result": {participant, scenario, ops,
seconds, rate, p50_us, p99_us, sessions}} or {"round", "target", "participant", "scenario",
"error"}. The markdown section is written between two marker comments, so the rest of
docs/benchmarks.md (the `medkeeper bench coord` figures, the embedded engine's section) is kept.
Also: scenario e (`dispatch`: orders/s end to end, created → called and created → completed
latency), scenario f (`memory`: bytes per znode, the embedded engine's RSS against the
standalone ZooKeeper's JVM) and the servers' RSS, heap and GC counts after each round
(`--servers`, lines written by `report.py --server-stats ROUND TARGET NODE PID`).
Standard library only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

START = "<!-- scripts/bench: side-by-side results (generated; edit scripts/bench instead) -->"
END = "<!-- end of scripts/bench results -->"
PARTICIPANTS = ["medkeeper", "medkeeper-requeue", "curator", "kazoo"]
NAMES = {"medkeeper": "medkeeper", "medkeeper-requeue": "medkeeper (requeue)",
         "curator": "Curator 5.4", "kazoo": "kazoo"}
TARGETS = ["standalone", "ensemble", "embedded"]
SCENARIOS = [
    ("raw-pairs", "sequential create+delete pairs/s, 1 session"),
    ("raw-children", "getChildren/s (16 children), sequential, 1 session"),
    ("raw-creates-64", "creates/s, 64 in flight, 1 session"),
    ("raw-gets-64", "getData/s (100 B), 64 in flight, 1 session"),
    ("lock-uncontended", "lock: acquire+release cycles/s, 1 session"),
    ("lock-contended-4", "lock: hand-offs/s, 4 sessions on one lock"),
    ("lock-contended-16", "lock: hand-offs/s, 16 sessions on one lock"),
    ("lock-independent-64", "lock: cycles/s, 64 sessions each on its own lock"),
    ("semaphore-permits", "semaphore: acquire+release of 1 of 4 permits/s, 8 sessions"),
    ("queue-depth-10000", "priority queue: enqueue+dequeue pairs/s at depth 10,000"),
    ("election-failover", "election failover: leader's session closed → new leader known to all"),
]


def load(path):
    runs, errors = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            o = json.loads(line)
            if "error" in o:
                errors.append(o)
            else:
                r = dict(o["result"])
                r["round"], r["target"] = o["round"], o["target"]
                runs.append(r)
    return runs, errors


def group(runs):
    g = {}
    for r in runs:
        g.setdefault((r["target"], r["scenario"], r["participant"]), []).append(r)
    return g


def summary(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt_rate(s):
    if s is None:
        return "—"
    if s["n"] == 1:
        return f"{s['median']:,.0f}"
    return f"**{s['median']:,.0f}** ({s['min']:,.0f}–{s['max']:,.0f})"


def fmt_ms(s):
    if s is None:
        return "—"
    m = lambda v: f"{v / 1000:,.1f}"  # noqa: E731
    if s["n"] == 1:
        return m(s["median"])
    return f"**{m(s['median'])}** ({m(s['min'])}–{m(s['max'])})"


def targets(g):
    """The issue's targets, computed from this run's medians."""
    def med(target, scenario, who="medkeeper", key="rate"):
        s = summary(g.get((target, scenario, who), []), key)
        return s["median"] if s else None

    rows = []
    pairs, children = med("standalone", "raw-pairs"), med("standalone", "raw-children")
    w = 1 / (2 * pairs) if pairs else None
    r = 1 / children if children else None
    bound_handoff = 1 / (w + r) if w and r else None
    bound_cycle = 1 / (2 * w + r) if w and r else None
    formulas = {
        "W": w, "R": r, "handoff_bound": bound_handoff, "cycle_bound": bound_cycle,
    }

    def add(what, ours, factor, base, base_name):
        if ours is None or base is None:
            rows.append({"target": what, "value": ours, "required": None, "status": "not measured"})
            return
        required = factor * base
        rows.append({
            "target": what, "value": ours, "required": required, "base": base,
            "base_name": base_name, "ratio": ours / base,
            "status": "met" if ours >= required else "missed",
        })

    # Each lock target for the plain acquire/release loop and for the requeue loop
    # (`Mutex::requeue`: release and re-join in one multi), when measured.
    variants = [("medkeeper", "")]
    if ("standalone", "lock-contended-4", "medkeeper-requeue") in g:
        variants.append(("medkeeper-requeue", ", requeue"))
    for who, tag in variants:
        for n in (4, 16):
            sc = f"lock-contended-{n}"
            ours = med("standalone", sc, who)
            add(f"contended hand-offs ({n} sessions{tag}) ≥ 1.6× Curator", ours, 1.6,
                med("standalone", sc, "curator"), "Curator")
            add(f"contended hand-offs ({n} sessions{tag}) ≥ 2.5× kazoo", ours, 2.5,
                med("standalone", sc, "kazoo"), "kazoo")
            add(f"contended hand-offs ({n} sessions{tag}) ≥ 90 % of 1/(W+R)", ours, 0.9,
                bound_handoff, "1/(W+R)")
        add(f"independent locks (64{tag}) ≥ 2× Curator",
            med("standalone", "lock-independent-64", who), 2.0,
            med("standalone", "lock-independent-64", "curator"), "Curator")
        add(f"uncontended cycles{tag} ≥ 95 % of 1/(2W+R)",
            med("standalone", "lock-uncontended", who), 0.95, bound_cycle, "1/(2W+R)")
    add("embedded creates (64 in flight) ≥ 10× standalone ZooKeeper",
        med("embedded", "raw-creates-64"), 10.0, med("standalone", "raw-creates-64"),
        "standalone ZooKeeper")
    return rows, formulas


def server_stats(round_, target, node, pid):
    """One JSON line: a ZooKeeper server's RSS, heap in use and GC counts (`jstat -gc`)."""
    o = {"round": int(round_), "target": target, "node": node, "pid": int(pid)}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    o["rss_kb"] = int(line.split()[1])
    except OSError:
        o["alive"] = False
        print(json.dumps(o))
        return
    try:
        out = subprocess.run(["jstat", "-gc", str(pid)], capture_output=True, text=True,
                             timeout=20).stdout.split("\n")
        g = dict(zip(out[0].split(), out[1].split()))
        val = lambda k: float(g.get(k, "0").replace(",", "."))  # noqa: E731
        o["heap_used_kb"] = round(sum(val(k) for k in ("S0U", "S1U", "EU", "OU")))
        o["heap_capacity_kb"] = round(sum(val(k) for k in ("S0C", "S1C", "EC", "OC")))
        o["young_gcs"], o["full_gcs"] = int(val("YGC")), int(val("FGC"))
        o["gc_seconds"] = val("GCT")
    except Exception as e:  # noqa: BLE001 - no JDK tools: RSS only
        o["jstat_error"] = str(e)
    print(json.dumps(o))


def fmt_us(s):
    if s is None:
        return "—"
    m = lambda v: f"{v / 1000:,.1f}"  # noqa: E731
    if s["n"] == 1:
        return m(s["median"])
    return f"**{m(s['median'])}** ({m(s['min'])}–{m(s['max'])})"


def fmt_bytes(s):
    if s is None:
        return "—"
    if s["n"] == 1:
        return f"{s['median']:,.0f}"
    return f"**{s['median']:,.0f}** ({s['min']:,.0f}–{s['max']:,.0f})"


def dispatch_section(g):
    cols = [t for t in ("embedded", "ensemble") if (t, "dispatch", "medkeeper") in g]
    if not cols:
        return []
    title = {"embedded": "embedded engine", "ensemble": "3-node ensemble"}
    inflight = {r.get("in_flight") for t in cols for r in g[(t, "dispatch", "medkeeper")]}
    out = ["### Dispatch end to end (medkeeper only)", ""]
    out.append(
        "The real hospital domain on one session: the demo hospital (2 MRI, 3 CT, 1 X-ray, and "
        "departments) loaded, an in-memory SQLite clinical store, one `Dispatcher` per pool "
        "running (each holding its pool's lock), a producer creating orders (random FHIR "
        "priority; MRI, CT or XRAY in proportion to their units, 2, 3 and 1; a new patient "
        "each) and technicians starting and completing "
        "every called order at once; "
        f"{', '.join(str(i) for i in sorted(x for x in inflight if x))} orders in the system at "
        "a time; the demo CT's stat reserve off (its time model assumes real exam durations; "
        "runs before 2026-11-25 21:10 UTC had it on). Orders/s: orders completed inside the window. Latency from the order's "
        "creation (its insert into the clinical store, just before its queue item) to its "
        "assignment (the dispatcher's `called`), and to its completion; milliseconds. Curator "
        "and kazoo have no dispatcher. (`medkeeper bench dispatch`)"
    )
    out.append("")
    out.append("| | " + " | ".join(title[t] for t in cols) + " |")
    out.append("|---|" + "---:|" * len(cols))
    rows = [("orders/s end to end", "rate", fmt_rate),
            ("created → called p50, ms", "p50_us", fmt_us),
            ("created → called p99, ms", "p99_us", fmt_us),
            ("created → completed p50, ms", "e2e_p50_us", fmt_us),
            ("created → completed p99, ms", "e2e_p99_us", fmt_us)]
    for label, key, f in rows:
        cells = [f(summary(g[(t, "dispatch", "medkeeper")], key)) for t in cols]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def memory_section(g):
    mk, zk = g.get(("embedded", "memory", "medkeeper")), g.get(("standalone", "memory", "zookeeper"))
    if not mk and not zk:
        return []
    n = {r.get("znodes") for r in (mk or []) + (zk or [])}
    d = {r.get("data_bytes") for r in (mk or []) + (zk or [])}
    out = ["### Memory per znode", ""]
    out.append(
        f"{', '.join(f'{x:,}' for x in sorted(n))} persistent znodes of "
        f"{', '.join(str(x) for x in sorted(d))} B (under 1,000 parents, 64 creates in flight); "
        "bytes per znode = growth of the resident set (VmRSS) of the process holding the tree, "
        "divided by the znodes: the benchmark's own process for the embedded engine, the "
        "standalone server's JVM for ZooKeeper (read from /proc/PID/status after a full GC, "
        "`jcmd PID GC.run`). For the JVM the live heap after that GC is shown too: the tree's "
        "own size without the collector's slack, and the figure to compare — the JVM's RSS "
        "growth depends on how much heap earlier scenarios had already made it commit (this "
        "scenario runs last), the engine's does not. (`medkeeper bench memory`)"
    )
    out.append("")
    out.append("| | medkeeper (embedded) | ZooKeeper 3.8 (standalone JVM) |")
    out.append("|---|---:|---:|")
    cell = lambda rs, k: fmt_bytes(summary(rs or [], k))  # noqa: E731
    out.append(f"| RSS growth per znode, bytes | {cell(mk, 'rss_per_znode')} "
               f"| {cell(zk, 'rss_per_znode')} |")
    out.append(f"| live heap per znode after full GC, bytes | — | {cell(zk, 'heap_per_znode')} |")
    out.append(f"| fill rate, creates/s | {cell(mk, 'rate')} | {cell(zk, 'rate')} |")
    out.append("")
    return out


def servers_section(servers):
    if not servers:
        return []
    out = ["### ZooKeeper servers after each round", ""]
    out.append(
        "Each server's resident set, heap in use and capacity (`jstat -gc`) and its collections "
        "so far, read after the round and after any leftovers were wiped (every participant "
        "deletes its own subtree when it ends; round 0 is before the first run). A heap that "
        "only grows, or full collections piling up, would mean the later rounds measure a "
        "struggling server."
    )
    out.append("")
    out.append("| round | server | RSS, MiB | heap used / capacity, MiB | young GCs | full GCs "
               "| GC time, s |")
    out.append("|---:|---|---:|---:|---:|---:|---:|")
    for s in servers:
        mib = lambda k: f"{s[k] / 1024:,.0f}" if k in s else "—"  # noqa: E731
        out.append(
            f"| {s['round']} | {s['target']} {s['node']}"
            f"{'' if s.get('alive', True) else ' (exited)'} | {mib('rss_kb')} "
            f"| {mib('heap_used_kb')} / {mib('heap_capacity_kb')} | {s.get('young_gcs', '—')} "
            f"| {s.get('full_gcs', '—')} | {s.get('gc_seconds', '—')} |")
    out.append("")
    return out


def markdown(runs, errors, m0, m1, servers=()):
    g = group(runs)
    out = [START, "", "## Side by side: medkeeper, Apache Curator and kazoo (`scripts/bench`)", ""]
    out.append(
        f"Run on {m0['date']}: `{m0['command']}` — {m0['rounds']} round(s), "
        f"{m0['seconds']} s windows after a {m0['warmup']} s warm-up, participants interleaved "
        "(medkeeper, Curator, kazoo, medkeeper, ...). Each cell: **median** (min–max) over the "
        "rounds; rates are operations per second."
    )
    out.append("")
    out.append(
        f"Machine: {m0['nproc']} cores ({m0['cpu']}), {m0['memory']}, Linux {m0['kernel']}; "
        f"load average {m0['loadavg']} at the start, {m1['loadavg']} at the end (other builds "
        "on the same machine make the figures noisy). ZooKeeper "
        f"{m0['zookeeper']} with tickTime 200 ms and a {m0.get('zk_heap', '128m')} heap, standalone and a 3-node ensemble on loopback "
        f"(`scripts/zk`); {m0['java']}; Curator {m0['curator']}; kazoo {m0['kazoo']}; "
        f"{m0['rustc']}."
    )
    out.append("")
    for target in TARGETS:
        rows = [(sc, d) for sc, d in SCENARIOS
                if sc != "election-failover"
                and any((target, sc, p) in g for p in PARTICIPANTS)]
        if not rows:
            continue
        title = {"standalone": "Standalone ZooKeeper", "ensemble": "3-node ensemble",
                 "embedded": "Embedded engine (medkeeper only)"}[target]
        out += [f"### {title}", ""]
        out.append("| scenario | " + " | ".join(NAMES[p] for p in PARTICIPANTS)
                   + " | medkeeper p50 / p99 latency |")
        out.append("|---|" + "---:|" * len(PARTICIPANTS) + "---:|")
        for sc, d in rows:
            cells = [fmt_rate(summary(g.get((target, sc, p), []), "rate")) for p in PARTICIPANTS]
            mk = g.get((target, sc, "medkeeper"), [])
            p50, p99 = summary(mk, "p50_us"), summary(mk, "p99_us")
            lat = f"{p50['median']:,.0f} / {p99['median']:,.0f} µs" if p50 and p99 else "—"
            out.append(f"| `{sc}` — {d} | " + " | ".join(cells) + f" | {lat} |")
        out.append("")
    fo = [p for p in PARTICIPANTS if ("standalone", "election-failover", p) in g]
    if fo:
        out += ["### Election failover (standalone)", ""]
        out.append(
            "3 candidates, each with its own session. The leader's session is closed; the time "
            "runs from the close call until the new leader's campaign has returned and every "
            "other remaining candidate has read the new leader after a child watch fired. "
            "Repeated for the window (a fresh candidate replaces the closed one each time). "
            "Milliseconds. Curator's figure is dominated by ZooKeeper's Java client: its "
            "`ZooKeeper.close()` takes ~100 ms before the session ends on the server (measured "
            "with `CURATOR_BENCH_DEBUG=1`: close returns after ~102 ms, the new leader is known "
            "~3 ms later), so the recipe's own reaction is a few ms, as for the others."
        )
        out.append("")
        out.append("| | " + " | ".join(NAMES[p] for p in fo) + " |")
        out.append("|---|" + "---:|" * len(fo))
        for key, label in (("p50_us", "p50 failover, ms"), ("p99_us", "p99 failover, ms"),
                           ("ops", "failovers per window")):
            cells = []
            for p in fo:
                s = summary(g[("standalone", "election-failover", p)], key)
                if key == "ops":
                    cells.append(f"{s['median']:.0f}" if s else "—")
                else:
                    cells.append(fmt_ms(s))
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    out += dispatch_section(g)
    out += memory_section(g)
    rows, f = targets(g)
    out += ["### Targets (issue 7)", ""]
    if f["W"] and f["R"]:
        out.append(
            "From medkeeper's raw figures on standalone ZooKeeper in this same run: "
            f"W = 1 / (2 × pairs/s) = {f['W'] * 1e6:,.0f} µs (one sequential write; a pair is a "
            f"create and a delete), R = 1 / (getChildren/s) = {f['R'] * 1e6:,.0f} µs. A fair "
            "hand-off (holder's delete + notification + waiter's re-read) is bounded near "
            f"1/(W+R) = {f['handoff_bound']:,.0f}/s; an uncontended cycle (create + getChildren + "
            f"delete) near 1/(2W+R) = {f['cycle_bound']:,.0f}/s."
        )
        out.append("")
    out.append("| target | medkeeper | required | ratio | |")
    out.append("|---|---:|---:|---:|---|")
    for r in rows:
        if r["required"] is None:
            out.append(f"| {r['target']} | — | — | — | not measured |")
            continue
        out.append(
            f"| {r['target']} | {r['value']:,.0f}/s | {r['required']:,.0f}/s "
            f"| {r['ratio']:.2f}× {r['base_name']} | **{r['status']}** |"
        )
    out.append("")
    out += servers_section(servers)
    if errors:
        out += ["### Failed runs", ""]
        for e in errors:
            out.append(f"- round {e['round']}, {e['target']}, `{e['scenario']}`, "
                       f"{e['participant']}: {e['error']}")
        out.append("")
    out += [END, ""]
    return "\n".join(out), rows, f


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--server-stats":
        server_stats(*sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--machine-start", required=True)
    ap.add_argument("--machine-end", required=True)
    ap.add_argument("--servers", help="servers.jsonl of scripts/bench (optional)")
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    runs, errors = load(a.results)
    with open(a.machine_start) as f:
        m0 = json.load(f)
    with open(a.machine_end) as f:
        m1 = json.load(f)
    servers = []
    if a.servers and os.path.exists(a.servers):
        with open(a.servers) as f:
            servers = [json.loads(line) for line in f if line.strip()]
    section, rows, formulas = markdown(runs, errors, m0, m1, servers)

    old = ""
    if os.path.exists(a.markdown):
        with open(a.markdown) as f:
            old = f.read()
    if START in old and END in old:
        before, rest = old.split(START, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        doc = before + section + ("\n" + after if after else "")
    elif old:
        doc = old.rstrip("\n") + "\n\n" + section
    else:
        doc = "# Benchmarks\n\n" + section
    with open(a.markdown, "w") as f:
        f.write(doc)

    g = group(runs)
    medians = []
    for (target, sc, p), rs in sorted(g.items()):
        medians.append({"target": target, "scenario": sc, "participant": p,
                        "rate": summary(rs, "rate"), "p50_us": summary(rs, "p50_us"),
                        "p99_us": summary(rs, "p99_us")})
    with open(a.json, "w") as f:
        json.dump({"machine": {"start": m0, "end": m1}, "formulas": formulas, "servers": servers,
                   "targets": rows, "summary": medians, "runs": runs, "errors": errors},
                  f, indent=1)
        f.write("\n")
    print(section)


if __name__ == "__main__":
    main()
