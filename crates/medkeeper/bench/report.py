#!/usr/bin/env python3
"""Assembles scripts/bench's results into docs/benchmarks.md and docs/benchmarks.json.

Input: one JSON object a line, {"round", "target", "result": {participant, scenario, ops,
seconds, rate, p50_us, p99_us, sessions}} or {"round", "target", "participant", "scenario",
"error"}. The markdown section is written between two marker comments, so the rest of
docs/benchmarks.md (the `medkeeper bench coord` figures, the embedded engine's section) is kept.
Standard library only.
"""

import argparse
import json
import os
import statistics

START = "<!-- scripts/bench: side-by-side results (generated; edit scripts/bench instead) -->"
END = "<!-- end of scripts/bench results -->"
PARTICIPANTS = ["medkeeper", "curator", "kazoo"]
NAMES = {"medkeeper": "medkeeper", "curator": "Curator 5.4", "kazoo": "kazoo"}
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

    for n in (4, 16):
        sc = f"lock-contended-{n}"
        ours = med("standalone", sc)
        add(f"contended hand-offs ({n} sessions) ≥ 1.6× Curator", ours, 1.6,
            med("standalone", sc, "curator"), "Curator")
        add(f"contended hand-offs ({n} sessions) ≥ 2.5× kazoo", ours, 2.5,
            med("standalone", sc, "kazoo"), "kazoo")
        add(f"contended hand-offs ({n} sessions) ≥ 90 % of 1/(W+R)", ours, 0.9, bound_handoff,
            "1/(W+R)")
    add("independent locks (64) ≥ 2× Curator", med("standalone", "lock-independent-64"), 2.0,
        med("standalone", "lock-independent-64", "curator"), "Curator")
    add("uncontended cycles ≥ 95 % of 1/(2W+R)", med("standalone", "lock-uncontended"), 0.95,
        bound_cycle, "1/(2W+R)")
    add("embedded creates (64 in flight) ≥ 10× standalone ZooKeeper",
        med("embedded", "raw-creates-64"), 10.0, med("standalone", "raw-creates-64"),
        "standalone ZooKeeper")
    return rows, formulas


def markdown(runs, errors, m0, m1):
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
        f"{m0['zookeeper']} with tickTime 200 ms, standalone and a 3-node ensemble on loopback "
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
    if errors:
        out += ["### Failed runs", ""]
        for e in errors:
            out.append(f"- round {e['round']}, {e['target']}, `{e['scenario']}`, "
                       f"{e['participant']}: {e['error']}")
        out.append("")
    out += [END, ""]
    return "\n".join(out), rows, f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--machine-start", required=True)
    ap.add_argument("--machine-end", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    runs, errors = load(a.results)
    with open(a.machine_start) as f:
        m0 = json.load(f)
    with open(a.machine_end) as f:
        m1 = json.load(f)
    section, rows, formulas = markdown(runs, errors, m0, m1)

    old = ""
    if os.path.exists(a.markdown):
        with open(a.markdown) as f:
            old = f.read()
    if START in old and END in old:
        before, rest = old.split(START, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        doc = before + section + after
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
        json.dump({"machine": {"start": m0, "end": m1}, "formulas": formulas,
                   "targets": rows, "summary": medians, "runs": runs, "errors": errors},
                  f, indent=1)
        f.write("\n")
    print(section)


if __name__ == "__main__":
    main()
