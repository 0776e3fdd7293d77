// CuratorLock — an Apache Curator 5.4 InterProcessMutex contender for medkeeper's lock
// interoperability test (crates/recipes/tests/interop.rs, run by scripts/interop).
//
//   java -cp CLASSPATH CuratorLock CONNECT LOCK_PATH ITERATIONS RECORD_FILE NAME [try=MS]
//
// Loop mode (no `try=`): connects, prints `ready` on stdout, waits for one line on stdin (the
// test's start signal, so that every contender competes from the same moment), then ITERATIONS
// times: acquire the mutex, append `enter NAME`, sleep ~2 ms, append `exit NAME`, release.
// Prints `done` and exits 0.
//
// Probe mode (`try=MS`): one acquire with an MS-millisecond timeout; prints `acquired` (and
// releases; exit 0) or `timeout` (exit 3).
//
// Record lines are appended with one write(2) of the whole line on a descriptor opened with
// O_APPEND — the same way the Rust test and kazoo_lock.py write theirs. On Linux an O_APPEND
// write to a regular file moves the offset and copies the bytes under the inode lock, so short
// lines from concurrent processes never interleave; no file lock is needed (and none is taken
// anywhere, so all writers follow one discipline).
//
// Curator's protected mode is what InterProcessMutex always uses: its contender nodes are
// `_c_<uuid>-lock-NNNNNNNNNN`, the very names medkeeper's Mutex creates; Curator orders
// children by the text after the last `lock-`, so it sees medkeeper's contenders as its own.

import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;

public final class CuratorLock {
    private CuratorLock() {}

    public static void main(String[] args) throws Exception {
        // Before any logger exists: ZooKeeper and Curator are chatty at INFO.
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        if (args.length < 5 || args.length > 6) {
            System.err.println(
                "usage: CuratorLock CONNECT LOCK_PATH ITERATIONS RECORD_FILE NAME [try=MS]");
            System.exit(2);
        }
        String connect = args[0];
        String lockPath = args[1];
        int iterations = Integer.parseInt(args[2]);
        String record = args[3];
        String name = args[4];
        long tryMs = -1;
        if (args.length == 6) {
            if (!args[5].startsWith("try=")) {
                System.err.println("unknown argument " + args[5]);
                System.exit(2);
            }
            tryMs = Long.parseLong(args[5].substring(4));
        }

        CuratorFramework client = CuratorFrameworkFactory.newClient(
            connect, 10_000, 10_000, new ExponentialBackoffRetry(100, 10));
        int code = 0;
        try {
            client.start();
            if (!client.blockUntilConnected(30, TimeUnit.SECONDS)) {
                System.err.println(name + ": could not connect to " + connect);
                System.exit(1);
            }
            InterProcessMutex mutex = new InterProcessMutex(client, lockPath);
            if (tryMs >= 0) {
                code = probe(mutex, tryMs);
            } else {
                loop(mutex, iterations, record, name);
            }
        } finally {
            // Closes the session, so any node of ours is gone when the process exits.
            client.close();
        }
        System.exit(code);
    }

    private static int probe(InterProcessMutex mutex, long tryMs) throws Exception {
        if (mutex.acquire(tryMs, TimeUnit.MILLISECONDS)) {
            System.out.println("acquired");
            System.out.flush();
            mutex.release();
            return 0;
        }
        System.out.println("timeout");
        System.out.flush();
        return 3;
    }

    private static void loop(InterProcessMutex mutex, int iterations, String record, String name)
            throws Exception {
        System.out.println("ready");
        System.out.flush();
        if (System.in.read() < 0) {
            throw new IOException("stdin closed before the start signal");
        }
        byte[] enter = ("enter " + name + "\n").getBytes(StandardCharsets.UTF_8);
        byte[] exit = ("exit " + name + "\n").getBytes(StandardCharsets.UTF_8);
        // FileOutputStream(append=true) opens with O_APPEND and is unbuffered: each write(byte[])
        // below is one write(2) of one whole line.
        try (FileOutputStream out = new FileOutputStream(record, true)) {
            for (int i = 0; i < iterations; i++) {
                mutex.acquire();
                try {
                    out.write(enter);
                    Thread.sleep(2);
                    out.write(exit);
                } finally {
                    mutex.release();
                }
            }
        }
        System.out.println("done");
        System.out.flush();
    }
}
