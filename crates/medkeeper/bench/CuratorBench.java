// Apache Curator 5.4's side of medkeeper's benchmark suite (issue 7; run by scripts/bench).
//
// Runs ONE scenario against ZooKeeper for a window and prints ONE JSON line on stdout, with the
// same CLI and scenario names as `medkeeper bench recipes`:
//
//   java -cp CLASSPATH CuratorBench --connect zk:HOST:PORT[,...] --scenario NAME --seconds S
//        [--warmup W] --json
//
// Each contender has its own CuratorFramework (its own session) and its own thread. Operations
// count only if they start and finish inside the measured window (after the warm-up).
// Recipes: InterProcessMutex, InterProcessSemaphoreV2, DistributedPriorityQueue, LeaderLatch.

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.api.BackgroundCallback;
import org.apache.curator.framework.api.CuratorWatcher;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.leader.LeaderLatchListener;
import org.apache.curator.framework.recipes.leader.Participant;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.recipes.locks.InterProcessSemaphoreV2;
import org.apache.curator.framework.recipes.locks.Lease;
import org.apache.curator.framework.recipes.queue.DistributedPriorityQueue;
import org.apache.curator.framework.recipes.queue.QueueBuilder;
import org.apache.curator.framework.recipes.queue.QueueConsumer;
import org.apache.curator.framework.recipes.queue.QueueSerializer;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.zookeeper.CreateMode;

public final class CuratorBench {
    static final int WARMING = 0, MEASURING = 1, STOPPED = 2;

    interface Op {
        void run() throws Exception;
    }

    record Result(long ops, double seconds, List<Long> latNanos, int sessions) {}

    static String hosts;
    static final List<CuratorFramework> clients = Collections.synchronizedList(new ArrayList<>());

    static CuratorFramework client() throws Exception {
        CuratorFramework c = CuratorFrameworkFactory.builder()
                .connectString(hosts)
                .sessionTimeoutMs(10_000)
                .connectionTimeoutMs(15_000)
                .retryPolicy(new ExponentialBackoffRetry(100, 5))
                .build();
        c.start();
        if (!c.blockUntilConnected(30, TimeUnit.SECONDS)) {
            throw new IllegalStateException("cannot connect to " + hosts);
        }
        clients.add(c);
        return c;
    }

    static volatile int phase = WARMING;

    /** Runs each op in its own thread through the warm-up and the window. */
    static Result window(List<Op> ops, double warmup, double seconds, int sessions)
            throws Exception {
        phase = WARMING;
        List<Long> all = Collections.synchronizedList(new ArrayList<>());
        AtomicReference<Exception> error = new AtomicReference<>();
        List<Thread> threads = new ArrayList<>();
        for (Op op : ops) {
            Thread t = new Thread(() -> {
                List<Long> lat = new ArrayList<>();
                try {
                    while (true) {
                        int before = phase;
                        if (before == STOPPED) break;
                        long t0 = System.nanoTime();
                        op.run();
                        if (before == MEASURING && phase == MEASURING) {
                            lat.add(System.nanoTime() - t0);
                        }
                    }
                } catch (Exception e) {
                    error.compareAndSet(null, e);
                }
                all.addAll(lat);
            });
            t.setDaemon(true);
            t.start();
            threads.add(t);
        }
        Thread.sleep((long) (warmup * 1000));
        phase = MEASURING;
        long start = System.nanoTime();
        Thread.sleep((long) (seconds * 1000));
        phase = STOPPED;
        double elapsed = (System.nanoTime() - start) / 1e9;
        for (Thread t : threads) t.join(60_000);
        if (error.get() != null) throw error.get();
        return new Result(all.size(), elapsed, new ArrayList<>(all), sessions);
    }

    interface Submit {
        void submit(BackgroundCallback done) throws Exception;
    }

    /** Keeps 64 background requests in flight. */
    static Result pipelined(Submit submit, double warmup, double seconds) throws Exception {
        Semaphore inFlight = new Semaphore(64);
        List<Long> lat = Collections.synchronizedList(new ArrayList<>());
        AtomicReference<String> error = new AtomicReference<>();
        int[] state = {WARMING};
        long endWarm = System.nanoTime() + (long) (warmup * 1e9);
        long start = 0, end = Long.MAX_VALUE;
        while (true) {
            long now = System.nanoTime();
            if (state[0] == WARMING && now >= endWarm) {
                state[0] = MEASURING;
                start = now;
                end = start + (long) (seconds * 1e9);
            } else if (state[0] == MEASURING && now >= end) {
                state[0] = STOPPED;
                break;
            }
            inFlight.acquire();
            int before = state[0];
            long t0 = System.nanoTime();
            submit.submit((c, event) -> {
                if (event.getResultCode() != 0) {
                    error.compareAndSet(null, "result code " + event.getResultCode());
                } else if (before == MEASURING && state[0] == MEASURING) {
                    lat.add(System.nanoTime() - t0);
                }
                inFlight.release();
            });
        }
        double elapsed = (System.nanoTime() - start) / 1e9;
        inFlight.acquire(64);
        if (error.get() != null) throw new IllegalStateException(error.get());
        return new Result(lat.size(), elapsed, new ArrayList<>(lat), 1);
    }

    static final byte[] TEN = "0123456789".getBytes(StandardCharsets.UTF_8);

    static Result scenario(String name, String root, double warmup, double seconds)
            throws Exception {
        CuratorFramework first = client();
        first.create().creatingParentsIfNeeded().forPath(root);
        switch (name) {
            case "raw-pairs": {
                AtomicLong n = new AtomicLong();
                return window(List.of(() -> {
                    String p = root + "/n" + n.incrementAndGet();
                    first.create().forPath(p, TEN);
                    first.delete().forPath(p);
                }), warmup, seconds, 1);
            }
            case "raw-creates-64": {
                first.create().forPath(root + "/creates");
                return pipelined(cb -> first.create().withMode(CreateMode.PERSISTENT_SEQUENTIAL)
                        .inBackground(cb).forPath(root + "/creates/n-", TEN), warmup, seconds);
            }
            case "raw-gets-64": {
                for (int i = 0; i < 64; i++) first.create().forPath(root + "/n" + i, new byte[100]);
                AtomicLong k = new AtomicLong();
                return pipelined(cb -> first.getData().inBackground(cb)
                        .forPath(root + "/n" + (k.incrementAndGet() % 64)), warmup, seconds);
            }
            case "raw-children": {
                String d = root + "/children";
                first.create().forPath(d);
                for (int i = 0; i < 16; i++) {
                    first.create().forPath(String.format(
                            "%s/_c_00000000-0000-0000-0000-%012d-lock-%010d", d, i, i));
                }
                return window(List.of(() -> first.getChildren().forPath(d)), warmup, seconds, 1);
            }
            case "lock-uncontended":
            case "lock-contended-4":
            case "lock-contended-16":
            case "lock-independent-64": {
                int n = Map.of("lock-uncontended", 1, "lock-contended-4", 4,
                        "lock-contended-16", 16, "lock-independent-64", 64).get(name);
                boolean independent = name.equals("lock-independent-64");
                List<Op> ops = new ArrayList<>();
                for (int i = 0; i < n; i++) {
                    CuratorFramework c = i == 0 ? first : client();
                    InterProcessMutex m =
                            new InterProcessMutex(c, root + "/lock" + (independent ? i : ""));
                    ops.add(() -> {
                        m.acquire();
                        m.release();
                    });
                }
                return window(ops, warmup, seconds, n);
            }
            case "semaphore-permits": {
                List<Op> ops = new ArrayList<>();
                for (int i = 0; i < 8; i++) {
                    CuratorFramework c = i == 0 ? first : client();
                    InterProcessSemaphoreV2 s =
                            new InterProcessSemaphoreV2(c, root + "/semaphore", 4);
                    ops.add(() -> s.returnLease(s.acquire()));
                }
                return window(ops, warmup, seconds, 8);
            }
            case "queue-depth-10000":
                return queue(first, root, warmup, seconds);
            case "election-failover":
                return failover(first, root, seconds);
            default:
                throw new IllegalArgumentException("unknown scenario " + name);
        }
    }

    static final QueueSerializer<String> STRINGS = new QueueSerializer<>() {
        public byte[] serialize(String s) {
            return s.getBytes(StandardCharsets.UTF_8);
        }

        public String deserialize(byte[] b) {
            return new String(b, StandardCharsets.UTF_8);
        }
    };

    /**
     * DistributedPriorityQueue with 10,000 items queued: each op puts one item and lets the
     * consumer (which blocks between items, so the depth stays at 10,000) consume one.
     */
    static Result queue(CuratorFramework first, String root, double warmup, double seconds)
            throws Exception {
        String path = root + "/queue";
        DistributedPriorityQueue<String> producer =
                QueueBuilder.builder(first, null, STRINGS, path).buildPriorityQueue(0);
        producer.start();
        for (int i = 0; i < 10_000; i++) producer.put("fill-" + i, 100); // in the background
        while (first.getChildren().forPath(path).size() < 10_000) Thread.sleep(50);
        Semaphore permits = new Semaphore(0), consumed = new Semaphore(0);
        QueueConsumer<String> consumer = new QueueConsumer<>() {
            public void consumeMessage(String message) throws Exception {
                permits.acquire();
                consumed.release();
            }

            public void stateChanged(CuratorFramework c, ConnectionState s) {}
        };
        CuratorFramework other = client();
        DistributedPriorityQueue<String> consuming =
                QueueBuilder.builder(other, consumer, STRINGS, path).buildPriorityQueue(0);
        consuming.start();
        Result r = window(List.of(() -> {
            producer.put("order", 100);
            permits.release();
            consumed.acquire();
        }), warmup, seconds, 2);
        return r;
    }

    /**
     * 3 LeaderLatch candidates; close the leader's client (its session); time until the new
     * leader's isLeader() ran and every other remaining candidate read the new leader after a
     * child watch fired.
     */
    static Result failover(CuratorFramework first, String root, double seconds) throws Exception {
        String path = root + "/election";
        LinkedBlockingQueue<Object[]> won = new LinkedBlockingQueue<>();
        List<CuratorFramework> cs = new ArrayList<>();
        List<LeaderLatch> latches = new ArrayList<>();
        for (int i = 0; i < 3; i++) addCandidate(i == 0 ? first : client(), path, cs, latches, won);
        Object[] w = won.poll(60, TimeUnit.SECONDS);
        if (w == null) throw new IllegalStateException("no leader elected");
        int leader = (Integer) w[0];
        List<Long> lat = new ArrayList<>();
        long start = System.nanoTime();
        while ((System.nanoTime() - start) / 1e9 < seconds || lat.size() < 3) {
            String old = "c" + leader;
            Map<Integer, Object[]> seen = new ConcurrentHashMap<>();
            List<Thread> threads = new ArrayList<>();
            for (int i = 0; i < cs.size(); i++) {
                if (i == leader || cs.get(i) == null) continue;
                CuratorFramework c = cs.get(i);
                LeaderLatch latch = latches.get(i);
                int me = i;
                Thread t = new Thread(() -> {
                    try {
                        while (true) {
                            CountDownLatch fired = new CountDownLatch(1);
                            c.getChildren().usingWatcher((CuratorWatcher) e -> fired.countDown())
                                    .forPath(path);
                            Participant p = latch.getLeader();
                            if (p.isLeader() && !p.getId().equals(old)) {
                                seen.put(me, new Object[] {p.getId(), System.nanoTime()});
                                return;
                            }
                            fired.await(30, TimeUnit.SECONDS);
                        }
                    } catch (Exception e) {
                        // reported as a missing follower below
                    }
                });
                t.setDaemon(true);
                t.start();
                threads.add(t);
            }
            Thread.sleep(20);
            CuratorFramework dying = cs.get(leader);
            long t0 = System.nanoTime();
            // The session ends when ZooKeeper's own handle closes; CuratorFramework.close() first
            // spends ~100 ms shutting Curator's executors down, which is not failover.
            dying.getZookeeperClient().getZooKeeper().close();
            if (System.getenv("CURATOR_BENCH_DEBUG") != null) {
                System.err.printf("close took %d us%n", (System.nanoTime() - t0) / 1000);
            }
            cs.set(leader, null);
            w = won.poll(60, TimeUnit.SECONDS);
            if (w == null) throw new IllegalStateException("no new leader");
            int next = (Integer) w[0];
            long done = (Long) w[1];
            for (Thread t : threads) t.join(60_000);
            if (seen.size() != threads.size()) {
                throw new IllegalStateException("a follower never saw the new leader");
            }
            for (Object[] s : seen.values()) {
                if (!s[0].equals("c" + next)) {
                    throw new IllegalStateException("a follower saw " + s[0] + ", not c" + next);
                }
                done = Math.max(done, (Long) s[1]);
            }
            lat.add(done - t0);
            dying.close();
            leader = next;
            addCandidate(client(), path, cs, latches, won);
        }
        return new Result(lat.size(), (System.nanoTime() - start) / 1e9, lat, 3);
    }

    static void addCandidate(CuratorFramework c, String path, List<CuratorFramework> cs,
            List<LeaderLatch> latches, LinkedBlockingQueue<Object[]> won) throws Exception {
        int i = cs.size();
        LeaderLatch latch = new LeaderLatch(c, path, "c" + i);
        latch.addListener(new LeaderLatchListener() {
            public void isLeader() {
                won.add(new Object[] {i, System.nanoTime()});
            }

            public void notLeader() {}
        });
        cs.add(c);
        latches.add(latch);
        latch.start();
    }

    public static void main(String[] args) throws Exception {
        String connect = null, scenario = null;
        double seconds = 8, warmup = 1;
        boolean json = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--connect" -> connect = args[++i];
                case "--scenario" -> scenario = args[++i];
                case "--seconds" -> seconds = Double.parseDouble(args[++i]);
                case "--warmup" -> warmup = Double.parseDouble(args[++i]);
                case "--json" -> json = true;
                default -> throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (connect == null || scenario == null) {
            System.err.println("usage: CuratorBench --connect zk:HOSTS --scenario NAME "
                    + "[--seconds S] [--warmup W] [--json]");
            System.exit(2);
        }
        hosts = connect.startsWith("zk:") ? connect.substring(3) : connect;
        String root = "/curator-bench/" + scenario + "-" + ProcessHandle.current().pid() + "-"
                + UUID.randomUUID().toString().substring(0, 8);
        int status = 0;
        try {
            Result r = scenario(scenario, root, warmup, seconds);
            List<Long> lat = r.latNanos();
            Collections.sort(lat);
            double rate = r.ops() / r.seconds();
            StringBuilder sb = new StringBuilder();
            sb.append(String.format(
                    "{\"participant\":\"curator\",\"scenario\":\"%s\",\"ops\":%d,"
                            + "\"seconds\":%.3f,\"rate\":%.1f,\"sessions\":%d",
                    scenario, r.ops(), r.seconds(), rate, r.sessions()));
            if (!lat.isEmpty()) {
                sb.append(String.format(",\"p50_us\":%d,\"p99_us\":%d", pct(lat, 0.5) / 1000,
                        pct(lat, 0.99) / 1000));
            }
            sb.append('}');
            System.out.println(json ? sb.toString()
                    : String.format("curator %s: %d ops in %.2f s = %.1f/s", scenario, r.ops(),
                            r.seconds(), rate));
            System.out.flush();
        } catch (Exception e) {
            e.printStackTrace();
            status = 1;
        }
        List<CuratorFramework> used;
        synchronized (clients) {
            used = new ArrayList<>(clients);
        }
        for (CuratorFramework c : used) {
            try {
                c.close();
            } catch (Exception e) {
                // already closed
            }
        }
        // Leave the server as found: later runs must not pay for this run's znodes.
        try {
            CuratorFramework c = client();
            deleteTree(c, root);
            c.close();
        } catch (Exception e) {
            System.err.println("curator bench: could not delete " + root + ": " + e);
        }
        System.exit(status);
    }

    /**
     * Deletes root and everything below it: lists the tree level by level, then deletes the
     * deepest level first with up to 256 deletes in flight (Curator's deletingChildrenIfNeeded
     * deletes one node at a time: ~10 s for a 10,000-item queue).
     */
    static void deleteTree(CuratorFramework c, String root) throws Exception {
        List<List<String>> levels = new ArrayList<>();
        levels.add(List.of(root));
        while (true) {
            List<String> next = new ArrayList<>();
            for (String p : levels.get(levels.size() - 1)) {
                try {
                    for (String child : c.getChildren().forPath(p)) next.add(p + "/" + child);
                } catch (org.apache.zookeeper.KeeperException.NoNodeException e) {
                    // gone already
                }
            }
            if (next.isEmpty()) break;
            levels.add(next);
        }
        Semaphore inFlight = new Semaphore(256);
        AtomicReference<String> failed = new AtomicReference<>();
        for (int i = levels.size() - 1; i >= 0; i--) {
            for (String p : levels.get(i)) {
                inFlight.acquire();
                c.delete().inBackground((client, event) -> {
                    int rc = event.getResultCode();
                    if (rc != 0 && rc != org.apache.zookeeper.KeeperException.Code.NONODE.intValue()) {
                        failed.compareAndSet(null, event.getPath() + ": rc " + rc);
                    }
                    inFlight.release();
                }).forPath(p);
            }
            inFlight.acquire(256); // the level is done
            inFlight.release(256);
        }
        if (failed.get() != null) throw new IllegalStateException("delete failed at " + failed.get());
    }

    static long pct(List<Long> sorted, double q) {
        return sorted.get(Math.min(sorted.size() - 1, (int) (q * sorted.size())));
    }
}
