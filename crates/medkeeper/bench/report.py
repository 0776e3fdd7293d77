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
PARTICIPANTS = ["medkeeper", "medkeeper-requeue", "curator", "kazoo", "kazoo-threads"]
NAMES = {"medkeeper": "medkeeper", "medkeeper-requeue": "medkeeper (requeue)",
         "curator": "Curator 5.4", "kazoo": "kazoo", "kazoo-threads": "kazoo (threads of 1 process)"}
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


DISPATCH_COLS = [("embedded", "dispatch", "embedded, in-memory store"),
                 ("embedded", "dispatch-file", "embedded, file store"),
                 ("standalone", "dispatch-file", "standalone ZooKeeper, file store"),
                 ("ensemble", "dispatch", "3-node ensemble, in-memory store"),
                 ("ensemble", "dispatch-file", "3-node ensemble, file store")]


def fmt_num(s, digits=1):
    if s is None:
        return "—"
    m = lambda v: f"{v:,.{digits}f}"  # noqa: E731
    if s["n"] == 1:
        return m(s["median"])
    return f"**{m(s['median'])}** ({m(s['min'])}–{m(s['max'])})"


def dispatch_section(g):
    cols = [c for c in DISPATCH_COLS if (c[0], c[1], "medkeeper") in g]
    if not cols:
        return []
    inflight = {r.get("in_flight") for t, sc, _ in cols for r in g[(t, sc, "medkeeper")]}
    out = ["### Dispatch end to end (medkeeper only)", ""]
    out.append(
        "The real hospital domain on one session: the demo hospital (2 MRI, 3 CT, 1 X-ray, and "
        "departments) loaded, one `Dispatcher` per pool running (each holding its pool's lock), "
        "a producer creating orders (random FHIR "
        "priority; MRI, CT or XRAY in proportion to their units, 2, 3 and 1; a new patient "
        "each) and technicians starting and completing "
        "every called order at once; "
        f"{', '.join(str(i) for i in sorted(x for x in inflight if x))} orders in the system at "
        "a time; the demo CT's stat reserve off (its time model assumes real exam durations). "
        "The clinical store is an in-memory SQLite database, or the durable file `serve` uses "
        "(WAL, `synchronous=FULL`, a fresh file per run). Orders/s: orders completed inside "
        "the window. Latency from the order's "
        "creation (its insert into the clinical store, just before its queue item) to its "
        "assignment (the dispatcher's `called`), and to its completion; milliseconds. "
        "Per order: coordination requests counted by the client (to \"called\": the creation, "
        "the dispatchers and read models; after: the technicians' start and complete), store "
        "transactions (commits; each at least one fsync with the file store), the embedded "
        "engine's log fsyncs, and on ZooKeeper its own counters (`mntr`: packets received, "
        "pings included; the leader's fsyncs). Each bound is the orders/s that resource "
        "allows at the cost per order measured: fsyncs per order × a bare `fdatasync` of the "
        "same disk measured by the run (p50, 4 KiB `pwrite` + `fdatasync`, 300 before and 300 "
        "after the window: runs from 18:40 UTC on 2026-12-02 take the faster of the two, "
        "earlier ones both together), "
        "or the time the store had a call in its one connection per order (a call waiting "
        "for the connection or for a CPU counts, so on a busy machine this bound is reached "
        "by whatever is slowest), or the benchmark process's CPU time per order (with the "
        "embedded engine that is the whole system; on ZooKeeper the client side) on all the "
        "machine's cores. Curator and kazoo "
        "have no dispatcher. (`medkeeper bench dispatch [--store-file F]`)"
    )
    out.append("")
    out.append("| | " + " | ".join(c[2] for c in cols) + " |")
    out.append("|---|" + "---:|" * len(cols))
    ms = fmt_us
    rows = [("orders/s end to end", "rate", fmt_rate),
            ("created → called p50, ms", "p50_us", ms),
            ("created → called p99, ms", "p99_us", ms),
            ("created → completed p50, ms", "e2e_p50_us", ms),
            ("created → completed p99, ms", "e2e_p99_us", ms),
            ("coordination requests per order, to \"called\"", "requests_to_called_per_order",
             fmt_num),
            ("coordination requests per order, whole life", "requests_per_order", fmt_num),
            ("… of which writes and multis", "writes_per_order", fmt_num),
            ("idle: requests/s", "idle_requests_per_s", fmt_num),
            ("ZooKeeper: packets received per order", "zk_packets_per_order", fmt_num),
            ("ZooKeeper: idle packets/s (pings)", "zk_idle_packets_per_s", fmt_num),
            ("store transactions per order", "store_txns_per_order", fmt_num),
            ("store reads per order", "store_reads_per_order", fmt_num),
            ("engine log fsyncs per order", "engine_fsyncs_per_order",
             lambda s: fmt_num(s, 2)),
            ("ZooKeeper leader fsyncs per order", "zk_leader_fsyncs_per_order",
             lambda s: fmt_num(s, 2)),
            ("engine log fsyncs/s achieved", "engine_fsyncs_per_s", lambda s: fmt_num(s, 0)),
            ("bare fdatasync p50 / p99, µs", None, None),
            ("bound: engine log fsyncs, orders/s", "engine_fsync_bound_rate",
             lambda s: fmt_num(s, 0)),
            ("bound: store commits' fsyncs, orders/s", "store_fsync_bound_rate",
             lambda s: fmt_num(s, 0)),
            ("bound: both on one disk, orders/s", "fsync_bound_rate", lambda s: fmt_num(s, 0)),
            ("bound: ZooKeeper leader's fsyncs, orders/s", "zk_fsync_bound_rate",
             lambda s: fmt_num(s, 0)),
            ("time with a call in the store per order, ms", "store_ms_per_order",
             lambda s: fmt_num(s, 2)),
            ("bound: the store's one connection (busy, queueing included), orders/s",
             "store_bound_rate", lambda s: fmt_num(s, 0)),
            ("benchmark process CPU per order, ms", "cpu_ms_per_order", lambda s: fmt_num(s, 2)),
            ("bound: that CPU on every core of the machine, orders/s", "cpu_bound_rate",
             lambda s: fmt_num(s, 0))]
    for label, key, f in rows:
        if key is None:
            cells = []
            for t, sc, _ in cols:
                rs = g[(t, sc, "medkeeper")]
                a, b = summary(rs, "fsync_p50_us"), summary(rs, "fsync_p99_us")
                cells.append(f"{a['median']:,.0f} / {b['median']:,.0f}" if a and b else "—")
        else:
            cells = [f(summary(g[(t, sc, "medkeeper")], key)) for t, sc, _ in cols]
        if all(c == "—" for c in cells):
            continue
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def api_section(g):
    cols = [t for t in TARGETS if (t, "api", "medkeeper") in g]
    if not cols:
        return []
    title = {"embedded": "embedded", "standalone": "standalone ZooKeeper",
             "ensemble": "3-node ensemble"}
    clients = {r.get("clients") for t in cols for r in g[(t, "api", "medkeeper")]}
    out = ["### Through the HTTP API of a running `serve` (medkeeper only)", ""]
    out.append(
        "A real `medkeeper serve` (a child process; the demo hospital with the CT's stat reserve "
        "off; its clinical store the file it always uses) on the embedded engine in a fresh data "
        "directory or on a fresh chroot of ZooKeeper. "
        f"{', '.join(str(c) for c in sorted(x for x in clients if x))} HTTP clients (threads, a "
        "scheduler token and a keep-alive connection each) post one order at a time for "
        "patients registered before the window: each opens the patient's own event stream, "
        "`POST /api/orders`, and waits until the stream shows the order past `queued`; "
        "technicians follow `GET /api/events` and start and complete every order a unit shows "
        "through the API. Orders/s: completed inside the window. The clients and technicians "
        "run on the same 2 cores as the server. (`medkeeper bench api`)"
    )
    out.append("")
    out.append("| | " + " | ".join(title[t] for t in cols) + " |")
    out.append("|---|" + "---:|" * len(cols))
    rows = [("orders/s end to end", "rate", fmt_rate),
            ("POST → called on the patient's stream p50, ms", "p50_us", fmt_us),
            ("POST → called on the patient's stream p99, ms", "p99_us", fmt_us),
            ("the POST's round trip p50, ms", "post_p50_us", fmt_us),
            ("the POST's round trip p99, ms", "post_p99_us", fmt_us),
            ("ZooKeeper: packets received per order", "zk_packets_per_order", fmt_num),
            ("ZooKeeper: leader fsyncs per order", "zk_leader_fsyncs_per_order",
             lambda s: fmt_num(s, 2))]
    for label, key, f in rows:
        cells = [f(summary(g[(t, "api", "medkeeper")], key)) for t in cols]
        if all(c == "—" for c in cells):
            continue
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def targets13(g):
    """Issue 13's targets, from this run's medians: rows of target, figure, verdict, and for
    a missed throughput or latency target the bounds measured beside it."""
    def med(target, sc, key):
        s = summary(g.get((target, sc, "medkeeper"), []), key)
        return s["median"] if s else None

    rows = []

    def add(what, value, ok, shown, beside="", bounds=""):
        if value is None:
            rows.append({"target": what, "figure": "—", "status": "not measured",
                         "beside": beside, "bounds": bounds})
            return
        rows.append({"target": what, "figure": shown, "value": value,
                     "status": "met" if ok else "missed", "beside": beside, "bounds": bounds})

    def bounds_of(target):
        parts = []
        for key, name in (("engine_fsync_bound_rate", "engine log fsyncs"),
                          ("store_fsync_bound_rate", "store commits' fsyncs"),
                          ("fsync_bound_rate", "both fsyncs on one disk"),
                          ("zk_fsync_bound_rate", "ZooKeeper leader's fsyncs"),
                          ("store_bound_rate", "the store's one connection"),
                          ("cpu_bound_rate", "the process's CPU on all cores")):
            v = med(target, "dispatch-file", key)
            if v:
                parts.append(f"{name} {v:,.0f}/s")
        f50 = med(target, "dispatch-file", "fsync_p50_us")
        if f50:
            parts.append(f"bare fdatasync p50 {f50:,.0f} µs")
        return "; ".join(parts)

    for target, label in (("embedded", "embedded"), ("ensemble", "3-node ensemble")):
        for sc, key, limit, what in (
                ("dispatch-file", "requests_to_called_per_order", 6,
                 "≤ 6 coordination requests per order, created → called"),
                ("dispatch-file", "requests_per_order", 12,
                 "≤ 12 coordination requests per order, whole life")):
            v = med(target, sc, key)
            mem = med(target, "dispatch", key)
            add(f"{label}: {what}", v, v is not None and v <= limit,
                f"{v:.1f}" if v is not None else "—",
                f"in-memory store {mem:.1f}" if mem is not None else "")
    v = med("ensemble", "dispatch-file", "zk_packets_per_order")
    add("3-node ensemble: ≤ 12 requests per order as ZooKeeper's counters see it (packets, pings "
        "included)", v, v is not None and v <= 12, f"{v:.1f}" if v is not None else "—")
    for target, label in (("embedded", "embedded"), ("ensemble", "3-node ensemble")):
        v = med(target, "dispatch-file", "idle_requests_per_s")
        zk = med(target, "dispatch-file", "zk_idle_packets_per_s")
        add(f"{label}: an idle instance sends no more than its session pings", v,
            v is not None and v == 0,
            f"{v:.1f} requests/s besides pings" if v is not None else "—",
            f"ZooKeeper saw {zk:.1f} packets/s idle (1 session's pings)" if zk is not None
            else "")
    for target, label, rate_min, p99_max in (("ensemble", "3-node ensemble", 400, 25),
                                            ("embedded", "embedded", 2000, 5)):
        r = med(target, "dispatch-file", "rate")
        p99 = med(target, "dispatch-file", "p99_us")
        rm, pm = med(target, "dispatch", "rate"), med(target, "dispatch", "p99_us")
        add(f"{label}: ≥ {rate_min:,} orders/s end to end (file store)", r,
            r is not None and r >= rate_min, f"{r:,.0f}/s" if r is not None else "—",
            f"in-memory store {rm:,.0f}/s" if rm is not None else "", bounds_of(target))
        add(f"{label}: created → called p99 < {p99_max} ms (file store)", p99,
            p99 is not None and p99 / 1000 < p99_max,
            f"{p99 / 1000:,.1f} ms" if p99 is not None else "—",
            f"in-memory store {pm / 1000:,.1f} ms" if pm is not None else "")
    for target, label in (("embedded", "embedded"), ("ensemble", "3-node ensemble")):
        r, p99 = med(target, "api", "rate"), med(target, "api", "p99_us")
        if r is not None:
            rows.append({"target": f"{label}, through the HTTP API: orders/s and POST → called "
                                   "p99 (no figure set)",
                         "figure": f"{r:,.0f}/s, {p99 / 1000:,.1f} ms" if p99 else f"{r:,.0f}/s",
                         "status": "measured", "beside": "", "bounds": ""})
    return rows


def targets13_section(rows):
    if not rows or all(r["status"] == "not measured" for r in rows):
        return []
    out = ["### Targets (issue 13)", ""]
    out.append(
        "Run with the durable file store `serve` uses (the in-memory store's figure beside). "
        "Where a throughput target is missed, the bounds measured in the same run follow: the "
        "orders/s each resource allows at this run's cost per order.")
    out.append("")
    out.append("| target | figure | | beside | bounds measured |")
    out.append("|---|---:|---|---|---|")
    for r in rows:
        out.append(f"| {r['target']} | {r['figure']} | **{r['status']}** | {r['beside']} "
                   f"| {r['bounds'] if r['status'] == 'missed' else ''} |")
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
        + (f" Built from commit {m0['commit']}"
           + (f" with {m0['uncommitted']} files changed in the working tree (others' work in "
              "progress)" if str(m0.get('uncommitted', '0')) not in ('', '0') else "")
           + "." if m0.get("commit") else "")
    )
    out.append("")
    out.append(
        "Layouts, as each library's users deploy it: medkeeper's contenders are sessions of one "
        "process (its async runtime runs them in parallel); Curator's are threads of one JVM "
        "with a CuratorFramework (session) each, as a Java service embeds it (the JVM runs "
        "threads in parallel; separate JVMs would each pay their own JIT and heap on these 2 "
        "cores); kazoo's lock and semaphore contenders are one process each, as independent "
        "Python services contend (threads of one Python process are serialised by the "
        "interpreter's lock; the column \"kazoo (threads of 1 process)\" keeps that layout, "
        "the suite's before issue 13, for comparison). Single-session scenarios and kazoo's "
        "election candidates run in one process."
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
    out += api_section(g)
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
    rows13 = targets13(g)
    out += targets13_section(rows13)
    out += servers_section(servers)
    if errors:
        out += ["### Failed runs", ""]
        for e in errors:
            out.append(f"- round {e['round']}, {e['target']}, `{e['scenario']}`, "
                       f"{e['participant']}: {e['error']}")
        out.append("")
    out += [END, ""]
    return "\n".join(out), rows + rows13, f


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
