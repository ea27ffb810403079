/* bench/pool/Pool.java: the pool bench's Java peer: java.util.concurrent.ThreadPoolExecutor with
 * 2 core = 2 maximum threads and an unbounded LinkedBlockingQueue (what
 * Executors.newFixedThreadPool(2) builds), the core threads prestarted. It follows the protocol of
 * bench/pool/common.c, figure by figure (that file's head comment says what each one measures and
 * what it leaves out):
 *   java -cp DIR Pool throughput [--runs R] [--tasks N]
 *   java -cp DIR Pool latency [--runs R] [--rate HZ] [--seconds S]
 *   java -cp DIR Pool idle
 * Differences forced by the language: the submitter sleeps with LockSupport.parkNanos until each
 * absolute deadline (System.nanoTime is CLOCK_MONOTONIC; there is no clock_nanosleep), the
 * latency task is a lambda capturing its index (one allocation per task, as Java code submits),
 * the throughput task one shared Runnable. Process CPU is the sum of the scheduler's run time of
 * every thread (JIT and GC threads included; see cpuNs). The JVM runs with
 * its defaults; the untimed warm-up run gives the JIT its chance, and JVM start-up is not timed.
 */
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

public final class Pool {
	static final AtomicLong count = new AtomicLong();
	static volatile long target;
	static final Semaphore done = new Semaphore(0);
	static long[] slots;

	/* The process's CPU time in ns: the sum over its threads of the run time the scheduler
	 * accounts them (the first field of /proc/self/task/T/schedstat, in ns), which is what
	 * CLOCK_PROCESS_CPUTIME_ID adds up for the C and Go peers, less threads that exited (none do
	 * during the figures). The kernel brings a running thread's figure up to date only at a
	 * tick or a switch, so the calling thread's own comes from its thread CPU clock instead.
	 * The JDK's getProcessCpuTime reads times(2), whose 10 ms ticks cannot see an idle pool; it
	 * is the fallback when /proc cannot be read. */
	static final java.lang.management.ThreadMXBean tmx = ManagementFactory.getThreadMXBean();

	static long cpuNs() {
		long sum = 0;
		try (DirectoryStream<Path> ds = Files.newDirectoryStream(Paths.get("/proc/self/task"))) {
			Path self = Files.readSymbolicLink(Paths.get("/proc/thread-self")).getFileName();
			for (Path t : ds) {
				if (t.getFileName().equals(self))
					continue;
				try {
					String s = new String(Files.readAllBytes(t.resolve("schedstat")));
					sum += Long.parseLong(s.substring(0, s.indexOf(' ')));
				} catch (IOException | RuntimeException e) {
					/* the thread exited meanwhile */
				}
			}
			return sum + tmx.getCurrentThreadCpuTime();
		} catch (IOException e) {
			return ((com.sun.management.OperatingSystemMXBean)
				ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime();
		}
	}

	static ThreadPoolExecutor create() {
		ThreadPoolExecutor p = new ThreadPoolExecutor(2, 2, 0L, TimeUnit.MILLISECONDS,
			new LinkedBlockingQueue<Runnable>());
		p.prestartAllCoreThreads();
		return p;
	}

	static void destroy(ThreadPoolExecutor p) throws InterruptedException {
		p.shutdown();
		p.awaitTermination(1, TimeUnit.DAYS);
	}

	static final Runnable addTask = () -> {
		if (count.incrementAndGet() == target)
			done.release();
	};

	static void runAdds(ThreadPoolExecutor p, long n) {
		count.set(0);
		target = n;
		for (long i = 0; i < n; i++)
			p.execute(addTask);
		done.acquireUninterruptibly();
	}

	static void sleepUntil(long deadline) {
		for (long d; (d = deadline - System.nanoTime()) > 0;)
			LockSupport.parkNanos(d);
	}

	/* Returns the time from the first submit to the last. */
	static long runPaced(ThreadPoolExecutor p, int n, double rate) {
		final long[] s = slots;
		long period = (long) (1e9 / rate);
		long start = System.nanoTime() + 1000000, first = 0, last = 0;
		count.set(0);
		target = n;
		for (int i = 0; i < n; i++) {
			sleepUntil(start + i * period);
			last = System.nanoTime();
			if (i == 0)
				first = last;
			s[i] = last;
			final int k = i;
			p.execute(() -> {
				s[k] = System.nanoTime() - s[k];
				if (count.incrementAndGet() == target)
					done.release();
			});
		}
		done.acquireUninterruptibly();
		return last - first;
	}

	static double median(double[] v) {
		double[] c = v.clone();
		Arrays.sort(c);
		int n = c.length;
		return n % 2 == 1 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
	}

	static double min(double[] v) {
		return Arrays.stream(v).min().getAsDouble();
	}

	static double max(double[] v) {
		return Arrays.stream(v).max().getAsDouble();
	}

	static long percentile(long[] sorted, int n, double p) {
		long k = (long) (p * n + 0.999999);
		k = Math.max(1, Math.min(n, k));
		return sorted[(int) k - 1];
	}

	static String f(String fmt, Object... a) {
		return String.format((java.util.Locale) null, fmt, a);
	}

	static void throughput(int runs, long n) throws InterruptedException {
		double[] rate = new double[runs], cpu = new double[runs];
		ThreadPoolExecutor p = create();
		runAdds(p, n); /* warm-up */
		for (int i = 0; i < runs; i++) {
			long c0 = cpuNs(), t0 = System.nanoTime();
			runAdds(p, n);
			long t1 = System.nanoTime(), c1 = cpuNs();
			rate[i] = n * 1e9 / (t1 - t0);
			cpu[i] = (double) (c1 - c0) / n;
		}
		destroy(p);
		System.out.println(f("name=throughput impl=java tasks_per_s=%.0f min=%.0f max=%.0f "
			+ "runs=%d tasks=%d cpu_per_task_ns=%.1f", median(rate), min(rate), max(rate),
			runs, n, median(cpu)));
	}

	static void latency(int runs, double rate, double seconds) throws InterruptedException {
		int n = (int) (rate * seconds);
		double[] p50 = new double[runs], p99 = new double[runs], mx = new double[runs];
		double[] cpu = new double[runs], got = new double[runs];
		slots = new long[n];
		ThreadPoolExecutor p = create();
		int warm = Math.max(2, Math.min(n, (int) (rate * 0.2)));
		runPaced(p, warm, rate);
		for (int i = 0; i < runs; i++) {
			long c0 = cpuNs();
			long span = runPaced(p, n, rate);
			long c1 = cpuNs();
			Arrays.sort(slots, 0, n);
			p50[i] = percentile(slots, n, 0.50) / 1e3;
			p99[i] = percentile(slots, n, 0.99) / 1e3;
			mx[i] = slots[n - 1] / 1e3;
			cpu[i] = (double) (c1 - c0) / n / 1e3;
			got[i] = (n - 1) * 1e9 / span;
		}
		destroy(p);
		System.out.println(f("name=latency impl=java rate=%.0f tasks=%d runs=%d p50_us=%.2f "
			+ "p50_min=%.2f p50_max=%.2f p99_us=%.2f p99_min=%.2f p99_max=%.2f max_us=%.1f "
			+ "cpu_per_task_us=%.2f achieved_rate=%.0f", rate, n, runs, median(p50), min(p50),
			max(p50), median(p99), min(p99), max(p99), median(mx), median(cpu), median(got)));
	}

	static double idlePct() {
		long c0 = cpuNs(), t0 = System.nanoTime();
		sleepUntil(t0 + 1000000000L);
		long c1 = cpuNs(), t1 = System.nanoTime();
		return 100.0 * (c1 - c0) / (t1 - t0);
	}

	static void idle() throws InterruptedException {
		slots = new long[1000];
		ThreadPoolExecutor p = create();
		double created = idlePct();
		runPaced(p, 1000, 10000);
		double worked = idlePct();
		destroy(p);
		System.out.println(f("name=idle impl=java after_create_cpu_pct=%.3f "
			+ "after_work_cpu_pct=%.3f seconds=1", created, worked));
	}

	static void usage() {
		System.err.println("usage: Pool throughput [--runs R] [--tasks N]\n"
			+ "       Pool latency [--runs R] [--rate HZ] [--seconds S]\n"
			+ "       Pool idle");
		System.exit(2);
	}

	public static void main(String[] args) throws InterruptedException {
		if (args.length < 1)
			usage();
		boolean tp = args[0].equals("throughput");
		int runs = tp ? 7 : 3;
		long tasks = 1000000;
		double rate = 10000, seconds = 2;
		try {
			for (int i = 1; i < args.length; i += 2) {
				if (i + 1 >= args.length)
					usage();
				String v = args[i + 1];
				switch (args[i]) {
				case "--runs": runs = Integer.parseInt(v); break;
				case "--tasks": tasks = Long.parseLong(v); break;
				case "--rate": rate = Double.parseDouble(v); break;
				case "--seconds": seconds = Double.parseDouble(v); break;
				default: usage();
				}
			}
		} catch (NumberFormatException e) {
			usage();
		}
		if (runs < 1 || runs > 101 || tasks < 1 || !(rate > 0 && rate <= 1e6)
			|| !(seconds > 0 && seconds <= 3600) || rate * seconds < 2) {
			System.err.println("Pool: runs 1..101, tasks >= 1, rate 0..1e6, seconds 0..3600");
			System.exit(2);
		}
		switch (args[0]) {
		case "throughput": throughput(runs, tasks); break;
		case "latency": latency(runs, rate, seconds); break;
		case "idle": idle(); break;
		default: usage();
		}
	}
}
