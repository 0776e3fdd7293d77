"""kazoo_lock.py - a kazoo `Lock` contender for medkeeper's lock interoperability test
(crates/recipes/tests/interop.rs, run by scripts/interop).

    python kazoo_lock.py CONNECT LOCK_PATH ITERATIONS RECORD_FILE NAME [try=MS]

Loop mode (no `try=`): connects, prints `ready` on stdout, waits for one line on stdin (the
test's start signal, so that every contender competes from the same moment), then ITERATIONS
times: acquire the lock, append `enter NAME`, sleep ~2 ms, append `exit NAME`, release. Prints
`done` and exits 0.

Probe mode (`try=MS`): one acquire with an MS-millisecond timeout; prints `acquired` (and
releases; exit 0) or `timeout` (exit 3).

How kazoo sees medkeeper's contenders
-------------------------------------
kazoo's `Lock` names its own nodes `<uuid hex>__lock__NNNNNNNNNN` and, by default, counts as
contenders only the children matching `__lock__` followed by the ten-digit sequence number.
medkeeper's `Mutex` (like Apache Curator's `InterProcessMutex`) names its nodes
`_c_<uuid>-lock-NNNNNNNNNN`, which a default kazoo `Lock` would ignore: it would think it holds
the lock while a medkeeper client does. Since kazoo 2.7.1, `Lock(..., extra_lock_patterns=...)`
adds patterns to that test: kazoo compiles `(?:__lock__|-lock-)(-?\\d{10})$` and orders every
matching child by the captured sequence number, which ZooKeeper assigns from one counter per
parent to kazoo's and medkeeper's nodes alike. So with `extra_lock_patterns=("-lock-",)` kazoo
waits behind medkeeper's contenders, and medkeeper (which recognises `__lock__` plus a
ten-digit suffix) waits behind kazoo's: one fair line, in creation order.

Record lines are appended with one os.write of the whole line on a descriptor opened with
O_APPEND, as CuratorLock.java and the Rust test do (see the note there): short O_APPEND writes
to a regular file never interleave on Linux, so no file lock is taken.
"""

import logging
import os
import sys
import time

from kazoo.client import KazooClient
from kazoo.exceptions import LockTimeout

# The pattern that makes medkeeper's (and Curator's) `..-lock-NNNNNNNNNN` nodes contenders.
MEDKEEPER_LOCK_PATTERNS = ("-lock-",)


def main(argv):
    if len(argv) not in (6, 7):
        print(__doc__.splitlines()[3].strip(), file=sys.stderr)
        return 2
    connect, lock_path, iterations, record, name = argv[1:6]
    iterations = int(iterations)
    try_ms = None
    if len(argv) == 7:
        if not argv[6].startswith("try="):
            print("unknown argument " + argv[6], file=sys.stderr)
            return 2
        try_ms = int(argv[6][len("try="):])

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    client = KazooClient(hosts=connect, timeout=10.0)
    client.start(timeout=30)
    try:
        lock = client.Lock(
            lock_path, identifier=name, extra_lock_patterns=MEDKEEPER_LOCK_PATTERNS
        )
        if try_ms is not None:
            return probe(lock, try_ms)
        loop(lock, iterations, record, name)
        return 0
    finally:
        # Closes the session, so any node of ours is gone when the process exits.
        client.stop()
        client.close()


def probe(lock, try_ms):
    # A timed-out acquire raises LockTimeout (after deleting its node) rather than returning
    # False.
    try:
        acquired = lock.acquire(blocking=True, timeout=try_ms / 1000.0)
    except LockTimeout:
        acquired = False
    if acquired:
        print("acquired", flush=True)
        lock.release()
        return 0
    print("timeout", flush=True)
    return 3


def loop(lock, iterations, record, name):
    print("ready", flush=True)
    if not sys.stdin.readline():
        raise RuntimeError("stdin closed before the start signal")
    enter = ("enter %s\n" % name).encode()
    leave = ("exit %s\n" % name).encode()
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for _ in range(iterations):
            lock.acquire()
            try:
                write_line(fd, enter)
                time.sleep(0.002)
                write_line(fd, leave)
            finally:
                lock.release()
    finally:
        os.close(fd)
    print("done", flush=True)


def write_line(fd, line):
    written = os.write(fd, line)
    if written != len(line):
        raise RuntimeError("short write to the record file")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
