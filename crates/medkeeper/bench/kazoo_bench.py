#!/usr/bin/env python3
"""kazoo's side of medkeeper's benchmark suite (issue 7; run by scripts/bench).

Runs ONE scenario against ZooKeeper for a window and prints ONE JSON line on stdout, with the
same CLI and scenario names as `medkeeper bench recipes`:

    kazoo_bench.py --connect zk:HOST:PORT[,...] --scenario NAME --seconds S [--warmup W] --json

Each contender has its own KazooClient (its own session). In the lock and semaphore scenarios
each contender runs in its own process (`--layout processes`, the default): the layout of the
independent services that contend for a lock in production, and the only one in which kazoo's
contenders run in parallel — as threads of one process the interpreter's lock serialises them
(`--layout threads`, the suite's layout before issue 13). Operations count only if they start
and finish inside the measured window (after the warm-up).
"""

import argparse
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import uuid

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.recipe.queue import LockingQueue

logging.basicConfig(level=logging.ERROR)

WARMING, MEASURING, STOPPED = 0, 1, 2


class Target:
    def __init__(self, hosts):
        self.hosts = hosts
        self.clients = []

    def client(self):
        c = KazooClient(hosts=self.hosts, timeout=10.0)
        c.start(timeout=30)
        self.clients.append(c)
        return c

    def close(self):
        for c in self.clients:
            try:
                c.stop()
                c.close()
            except Exception:  # noqa: BLE001 - already stopped
                pass


class Window:
    """Runs workers (callables doing one operation) in threads through warm-up and window."""

    def __init__(self, warmup, seconds):
        self.warmup, self.seconds = warmup, seconds
        self.phase = WARMING
        self.lock = threading.Lock()
        self.latencies = []
        self.errors = []

    def _loop(self, op):
        lat = []
        try:
            while True:
                before = self.phase
                if before == STOPPED:
                    break
                t = time.perf_counter()
                op()
                if before == MEASURING and self.phase == MEASURING:
                    lat.append(time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 - reported
            self.errors.append(repr(e))
        with self.lock:
            self.latencies.extend(lat)

    def run(self, ops):
        threads = [threading.Thread(target=self._loop, args=(op,), daemon=True) for op in ops]
        for t in threads:
            t.start()
        time.sleep(self.warmup)
        self.phase = MEASURING
        start = time.perf_counter()
        time.sleep(self.seconds)
        self.phase = STOPPED
        elapsed = time.perf_counter() - start
        for t in threads:
            t.join(timeout=60)
        if self.errors:
            raise RuntimeError(self.errors[0])
        return len(self.latencies), elapsed, self.latencies


def pipelined(client, submit, warmup, seconds, in_flight=64):
    """Keeps `in_flight` async requests outstanding; `submit()` returns an IAsyncResult."""
    sem = threading.Semaphore(in_flight)
    state = {"phase": WARMING}
    lat = []
    errors = []

    def issue():
        sem.acquire()
        before = state["phase"]
        t = time.perf_counter()
        r = submit()

        def done(res):
            try:
                res.get_nowait()
                if before == MEASURING and state["phase"] == MEASURING:
                    lat.append(time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - reported
                errors.append(repr(e))
            sem.release()

        r.rawlink(done)

    end_warm = time.perf_counter() + warmup
    while time.perf_counter() < end_warm:
        issue()
    state["phase"] = MEASURING
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        issue()
    state["phase"] = STOPPED
    elapsed = time.perf_counter() - start
    for _ in range(in_flight):
        sem.acquire()
    if errors:
        raise RuntimeError(errors[0])
    return len(lat), elapsed, lat


def contender(hosts, path, ident, kind, ready, go, times, results):
    """One contender in its own process: its own session, acquire+release until the window
    closes; sends its latencies of the operations inside the window."""
    logging.basicConfig(level=logging.ERROR)
    lat, error = [], None
    try:
        c = KazooClient(hosts=hosts, timeout=10.0)
        c.start(timeout=60)
        if kind == "semaphore":
            rec = c.Semaphore(path, ident, max_leases=4)
        else:
            rec = c.Lock(path, ident)
        ready.put(ident)
        go.wait()
        warm_end, end = times[0], times[1]
        while True:
            t0 = time.time()
            if t0 >= end:
                break
            t = time.perf_counter()
            rec.acquire()
            rec.release()
            d = time.perf_counter() - t
            if t0 >= warm_end and time.time() <= end:
                lat.append(d)
        c.stop()
        c.close()
    except Exception as e:  # noqa: BLE001 - reported by the parent
        error = repr(e)
    results.put((ident, lat, error))


def run_processes(hosts, specs, kind, warmup, seconds):
    """Runs one contender process per (path, ident) in `specs` (spawned, not forked: the
    parent already holds a session and its threads); the window starts when all are
    connected."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    times = ctx.Array("d", 2)
    procs = [ctx.Process(target=contender,
                         args=(hosts, path, ident, kind, ready, go, times, results), daemon=True)
             for path, ident in specs]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    now = time.time()
    times[0], times[1] = now + 0.2 + warmup, now + 0.2 + warmup + seconds
    go.set()
    lat, errors = [], []
    for _ in procs:
        _, ls, error = results.get(timeout=seconds + warmup + 300)
        lat.extend(ls)
        if error:
            errors.append(error)
    for p in procs:
        p.join(timeout=30)
    if errors:
        raise RuntimeError(errors[0])
    return len(lat), seconds, lat


LAYOUT = "processes"


def scenario(target, name, root, warmup, seconds):
    first = target.client()
    first.ensure_path(root)
    w = Window(warmup, seconds)
    if name == "raw-pairs":
        counter = [0]

        def op():
            counter[0] += 1
            p = f"{root}/n{counter[0]}"
            first.create(p, b"0123456789")
            first.delete(p)

        return w.run([op]), 1
    if name == "raw-creates-64":
        first.ensure_path(f"{root}/creates")
        return pipelined(
            first,
            lambda: first.create_async(f"{root}/creates/n-", b"0123456789", sequence=True),
            warmup,
            seconds,
        ), 1
    if name == "raw-gets-64":
        for i in range(64):
            first.create(f"{root}/n{i}", b"\x07" * 100)
        k = [0]

        def submit():
            k[0] += 1
            return first.get_async(f"{root}/n{k[0] % 64}")

        return pipelined(first, submit, warmup, seconds), 1
    if name == "raw-children":
        d = f"{root}/children"
        first.ensure_path(d)
        for i in range(16):
            first.create(f"{d}/_c_00000000-0000-0000-0000-{i:012d}-lock-{i:010d}")
        return w.run([lambda: first.get_children(d)]), 1
    if name.startswith("lock-"):
        n = {"lock-uncontended": 1, "lock-contended-4": 4, "lock-contended-16": 16,
             "lock-independent-64": 64}[name]
        independent = name == "lock-independent-64"
        if LAYOUT == "processes":
            specs = [(f"{root}/lock{i if independent else ''}", f"k{i}") for i in range(n)]
            return run_processes(target.hosts, specs, "lock", warmup, seconds), n
        clients = [first] + [target.client() for _ in range(n - 1)]
        ops = []
        for i, c in enumerate(clients):
            lock = c.Lock(f"{root}/lock{i if independent else ''}", f"k{i}")

            def op(lock=lock):
                lock.acquire()
                lock.release()

            ops.append(op)
        return w.run(ops), n
    if name == "semaphore-permits":
        if LAYOUT == "processes":
            specs = [(f"{root}/semaphore", f"k{i}") for i in range(8)]
            return run_processes(target.hosts, specs, "semaphore", warmup, seconds), 8
        clients = [first] + [target.client() for _ in range(7)]
        ops = []
        for i, c in enumerate(clients):
            sem = c.Semaphore(f"{root}/semaphore", f"k{i}", max_leases=4)

            def op(sem=sem):
                sem.acquire()
                sem.release()

            ops.append(op)
        return w.run(ops), 8
    if name == "queue-depth-10000":
        q = LockingQueue(first, f"{root}/queue")
        for b in range(0, 10_000, 250):
            # One transaction per 250 items; a batch cut by a connection loss (a loaded
            # machine) is sent again: the depth only needs to be about 10,000.
            for attempt in range(5):
                try:
                    q.put_all([f"fill-{i}".encode() for i in range(b, b + 250)], priority=100)
                    break
                except ConnectionLoss:
                    if attempt == 4:
                        raise
                    time.sleep(0.5)

        def op():
            q.put(b"order", priority=100)
            q.get()
            q.consume()

        return w.run([op]), 1
    if name == "election-failover":
        return failover(target, first, root, seconds), 3
    raise SystemExit(f"unknown scenario {name}")


def failover(target, first, root, seconds):
    """3 candidates; close the leader's session; time until the new leader's function runs and
    every other remaining candidate reads the new leader after a child watch fired."""
    path = f"{root}/election"
    first.ensure_path(path)
    won = []  # (index, time)
    won_cv = threading.Condition()
    candidates = {}  # index -> (client, election)

    def add(client):
        i = len(candidates)
        e = client.Election(path, f"c{i}")
        candidates[i] = (client, e)

        def lead():
            with won_cv:
                won.append((i, time.perf_counter()))
                won_cv.notify_all()
            threading.Event().wait()  # hold until the session is closed

        threading.Thread(target=lambda: _quiet(e.run, lead), daemon=True).start()

    add(first)
    add(target.client())
    add(target.client())

    def next_win(count):
        with won_cv:
            won_cv.wait_for(lambda: len(won) >= count, timeout=60)
            if len(won) < count:
                raise RuntimeError("no leader elected")
            return won[count - 1]

    leader, _ = next_win(1)
    lat = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(lat) < 3:
        old = f"c{leader}"
        seen = {}
        threads = []
        for i, (c, e) in candidates.items():
            if i == leader or c is None:
                continue

            def follow(c=c, e=e, i=i):
                while True:
                    fired = threading.Event()
                    c.get_children(path, watch=lambda _ev: fired.set())
                    cs = e.contenders()
                    if cs and cs[0] != old:
                        seen[i] = (cs[0], time.perf_counter())
                        return
                    fired.wait(30)

            t = threading.Thread(target=follow, daemon=True)
            t.start()
            threads.append(t)
        time.sleep(0.02)
        client, _ = candidates[leader]
        t0 = time.perf_counter()
        client.stop()
        candidates[leader] = (None, None)
        nxt, done = next_win(len(lat) + 2)
        for t in threads:
            t.join(60)
        for who, t in seen.values():
            if who != f"c{nxt}":
                raise RuntimeError(f"a follower saw {who}, not c{nxt}")
            done = max(done, t)
        if len(seen) != len(threads):
            raise RuntimeError("a follower never saw the new leader")
        lat.append(done - t0)
        leader = nxt
        add(target.client())
    return len(lat), time.perf_counter() - start, lat


def _quiet(f, *args):
    try:
        f(*args)
    except Exception:  # noqa: BLE001 - the leader's session was closed under it
        pass


def pct(sorted_lat, q):
    if not sorted_lat:
        return None
    return int(sorted_lat[min(len(sorted_lat) - 1, int(q * len(sorted_lat)))] * 1e6)


def delete_tree(client, root, in_flight=256):
    """Deletes root and everything below it: lists the tree level by level, then deletes the
    deepest level first with up to `in_flight` asynchronous deletes (kazoo's recursive delete
    goes one node at a time: ~10 s for a 10,000-item queue)."""
    from kazoo.exceptions import NoNodeError

    levels = [[root]]
    while True:
        nxt = []
        for p in levels[-1]:
            try:
                nxt.extend(f"{p}/{c}" for c in client.get_children(p))
            except NoNodeError:
                pass
        if not nxt:
            break
        levels.append(nxt)
    for level in reversed(levels):
        for i in range(0, len(level), in_flight):
            pending = [client.delete_async(p) for p in level[i:i + in_flight]]
            for r in pending:
                try:
                    r.get(timeout=30)
                except NoNodeError:
                    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--layout", choices=["processes", "threads"], default="processes",
                    help="lock and semaphore contenders: one process each (default) or threads "
                         "of this process")
    a = ap.parse_args()
    global LAYOUT
    LAYOUT = a.layout
    hosts = a.connect.removeprefix("zk:")
    root = f"/kazoo-bench/{a.scenario}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    target = Target(hosts)
    try:
        (ops, elapsed, lat), sessions = scenario(target, a.scenario, root, a.warmup, a.seconds)
    finally:
        target.close()
        # Leave the server as found: later runs must not pay for this run's znodes.
        try:
            cleaner = Target(hosts)
            delete_tree(cleaner.client(), root)
            cleaner.close()
        except Exception as e:  # noqa: BLE001 - reported, the figures stand
            print(f"kazoo bench: could not delete {root}: {e!r}", file=sys.stderr)
    lat.sort()
    line = {"participant": "kazoo", "scenario": a.scenario, "ops": ops,
            "seconds": round(elapsed, 3), "rate": round(ops / elapsed, 1), "sessions": sessions,
            "layout": LAYOUT if a.scenario.startswith(("lock-", "semaphore")) and sessions > 1
            else "one process"}
    if ops:
        line["p50_us"], line["p99_us"] = pct(lat, 0.5), pct(lat, 0.99)
    if a.json:
        print(json.dumps(line), flush=True)
    else:
        print(f"kazoo {a.scenario}: {ops} ops in {elapsed:.2f} s = {ops / elapsed:.1f}/s", flush=True)
    sys.stdout.flush()
    os._exit(0)  # leader threads of closed sessions are still parked


if __name__ == "__main__":
    main()
