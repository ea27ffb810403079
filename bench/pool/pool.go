// bench/pool/pool.go: the pool bench's Go peer: a pool of 2 worker goroutines ranging over one
// buffered channel of func() (capacity 256 unless --chan-cap says otherwise: on this machine 256
// was the fastest of 16..1M, about 1.5 times 4096; a submit blocks while it is full, which is the
// channel's semantics, where the other pools' queues are unbounded), GOMAXPROCS set to 2 (this
// machine's CPU count, and the 2 workers'; the submitter is a third goroutine, as it is a third
// thread for the other pools). It follows the protocol of bench/pool/common.c, figure by figure
// (that file's head comment says what each one measures and what it leaves out):
//
//	pool-go throughput [--runs R] [--tasks N]
//	pool-go latency [--runs R] [--rate HZ] [--seconds S]
//	pool-go idle
//	options: --chan-cap N (256), --timer syscall|go (syscall)
//
// Differences forced by the language: the submitter sleeps with the clock_nanosleep system call
// to absolute CLOCK_MONOTONIC deadlines, because time.Sleep in Go 1.19 rounds sub-millisecond
// sleeps up to the netpoller's 1 ms when every P is idle (--timer go uses it anyway: the average
// rate holds, in bursts of about 10 tasks a millisecond). A goroutine blocked in that system call
// holds its P until it returns, so Go's latency includes the runtime's wake-up of another P to
// run the worker goroutine (or its steal from the submitter's P); timestamps are Go's monotonic clock
// (the same CLOCK_MONOTONIC through the vDSO); the latency task is a closure capturing its index
// (one allocation per task), the throughput task one shared func value. Process CPU is
// CLOCK_PROCESS_CPUTIME_ID (the runtime's own threads included). Built by run.sh with `go build`
// and GO111MODULE=off: it imports only the standard library.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	workers   = 2
	clockMono = 1 // CLOCK_MONOTONIC
	clockProc = 2 // CLOCK_PROCESS_CPUTIME_ID
	absTime   = 1 // TIMER_ABSTIME
)

type pool struct {
	ch chan func()
	wg sync.WaitGroup
}

func newPool() *pool {
	p := &pool{ch: make(chan func(), chanCap)}
	p.wg.Add(workers)
	for i := 0; i < workers; i++ {
		go func() {
			defer p.wg.Done()
			for f := range p.ch {
				f()
			}
		}()
	}
	return p
}

func (p *pool) destroy() {
	close(p.ch)
	p.wg.Wait()
}

var (
	chanCap = 256
	goTimer = false
	count   int64
	target  int64
	done    = make(chan struct{}, 1)
	slots   []int64
	epoch   = time.Now()
)

func clockNs(id uintptr) int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, id, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

func cpuNs() int64 { return clockNs(clockProc) }

// Monotonic ns since epoch; monoBase converts it to CLOCK_MONOTONIC for clock_nanosleep.
func now() int64 { return int64(time.Since(epoch)) }

var monoBase = clockNs(clockMono) - now()

func sleepUntil(deadline int64) {
	if goTimer {
		time.Sleep(time.Duration(deadline - now()))
		return
	}
	abs := deadline + monoBase
	ts := syscall.NsecToTimespec(abs)
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_CLOCK_NANOSLEEP, clockMono, absTime,
			uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e != syscall.EINTR {
			return
		}
	}
}

func addTask() {
	if atomic.AddInt64(&count, 1) == atomic.LoadInt64(&target) {
		done <- struct{}{}
	}
}

func runAdds(p *pool, n int64) {
	atomic.StoreInt64(&count, 0)
	atomic.StoreInt64(&target, n)
	f := addTask
	for i := int64(0); i < n; i++ {
		p.ch <- f
	}
	<-done
}

// Returns the time from the first submit to the last.
func runPaced(p *pool, n int, rate float64) int64 {
	s := slots
	period := int64(1e9 / rate)
	start := now() + 1000000
	var first, last int64
	atomic.StoreInt64(&count, 0)
	atomic.StoreInt64(&target, int64(n))
	for i := 0; i < n; i++ {
		sleepUntil(start + int64(i)*period)
		last = now()
		if i == 0 {
			first = last
		}
		s[i] = last
		k := i
		p.ch <- func() {
			s[k] = now() - s[k]
			if atomic.AddInt64(&count, 1) == atomic.LoadInt64(&target) {
				done <- struct{}{}
			}
		}
	}
	<-done
	return last - first
}

func median(v []float64) float64 {
	c := append([]float64(nil), v...)
	sort.Float64s(c)
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		if x < m {
			m = x
		}
	}
	return m
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		if x > m {
			m = x
		}
	}
	return m
}

func percentile(sorted []int64, p float64) int64 {
	n := len(sorted)
	k := int(p*float64(n) + 0.999999)
	if k < 1 {
		k = 1
	}
	if k > n {
		k = n
	}
	return sorted[k-1]
}

func throughput(runs int, n int64) {
	rate := make([]float64, runs)
	cpu := make([]float64, runs)
	p := newPool()
	runAdds(p, n) // warm-up
	for i := 0; i < runs; i++ {
		c0, t0 := cpuNs(), now()
		runAdds(p, n)
		t1, c1 := now(), cpuNs()
		rate[i] = float64(n) * 1e9 / float64(t1-t0)
		cpu[i] = float64(c1-c0) / float64(n)
	}
	p.destroy()
	fmt.Printf("name=throughput impl=go tasks_per_s=%.0f min=%.0f max=%.0f runs=%d tasks=%d "+
		"cpu_per_task_ns=%.1f gomaxprocs=%d chan_cap=%d\n", median(rate), minOf(rate),
		maxOf(rate), runs, n, median(cpu), runtime.GOMAXPROCS(0), chanCap)
}

func latency(runs int, rate, seconds float64) {
	n := int(rate * seconds)
	p50 := make([]float64, runs)
	p99 := make([]float64, runs)
	mx := make([]float64, runs)
	cpu := make([]float64, runs)
	got := make([]float64, runs)
	slots = make([]int64, n)
	p := newPool()
	warm := int(rate * 0.2)
	if warm > n {
		warm = n
	}
	if warm < 2 {
		warm = 2
	}
	runPaced(p, warm, rate)
	for i := 0; i < runs; i++ {
		c0 := cpuNs()
		span := runPaced(p, n, rate)
		c1 := cpuNs()
		s := slots[:n]
		sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
		p50[i] = float64(percentile(s, 0.50)) / 1e3
		p99[i] = float64(percentile(s, 0.99)) / 1e3
		mx[i] = float64(s[n-1]) / 1e3
		cpu[i] = float64(c1-c0) / float64(n) / 1e3
		got[i] = float64(n-1) * 1e9 / float64(span)
	}
	p.destroy()
	fmt.Printf("name=latency impl=go rate=%.0f tasks=%d runs=%d p50_us=%.2f p50_min=%.2f "+
		"p50_max=%.2f p99_us=%.2f p99_min=%.2f p99_max=%.2f max_us=%.1f cpu_per_task_us=%.2f "+
		"achieved_rate=%.0f gomaxprocs=%d chan_cap=%d timer=%s\n", rate, n, runs, median(p50),
		minOf(p50), maxOf(p50), median(p99), minOf(p99), maxOf(p99), median(mx), median(cpu),
		median(got), runtime.GOMAXPROCS(0), chanCap, timerName())
}

func timerName() string {
	if goTimer {
		return "go"
	}
	return "syscall"
}

func idlePct() float64 {
	c0, t0 := cpuNs(), now()
	sleepUntil(t0 + 1000000000)
	c1, t1 := cpuNs(), now()
	return 100 * float64(c1-c0) / float64(t1-t0)
}

func idle() {
	slots = make([]int64, 1000)
	p := newPool()
	created := idlePct()
	runPaced(p, 1000, 10000)
	worked := idlePct()
	p.destroy()
	fmt.Printf("name=idle impl=go after_create_cpu_pct=%.3f after_work_cpu_pct=%.3f seconds=1\n",
		created, worked)
}

func usage() {
	fmt.Fprint(os.Stderr, "usage: pool-go throughput [--runs R] [--tasks N]\n"+
		"       pool-go latency [--runs R] [--rate HZ] [--seconds S]\n"+
		"       pool-go idle\n"+
		"options: --chan-cap N (256), --timer syscall|go (syscall)\n")
	os.Exit(2)
}

func main() {
	runtime.GOMAXPROCS(2)
	args := os.Args[1:]
	if len(args) < 1 {
		usage()
	}
	runs := 3
	if args[0] == "throughput" {
		runs = 7
	}
	tasks := int64(1000000)
	rate, seconds := 10000.0, 2.0
	for i := 1; i < len(args); i += 2 {
		if i+1 >= len(args) {
			usage()
		}
		var err error
		switch v := args[i+1]; args[i] {
		case "--runs":
			runs, err = strconv.Atoi(v)
		case "--tasks":
			tasks, err = strconv.ParseInt(v, 10, 64)
		case "--rate":
			rate, err = strconv.ParseFloat(v, 64)
		case "--seconds":
			seconds, err = strconv.ParseFloat(v, 64)
		case "--chan-cap":
			chanCap, err = strconv.Atoi(v)
		case "--timer":
			if v != "go" && v != "syscall" {
				usage()
			}
			goTimer = v == "go"
		default:
			usage()
		}
		if err != nil {
			usage()
		}
	}
	if runs < 1 || runs > 101 || tasks < 1 || chanCap < 0 || chanCap > 1<<24 || !(rate > 0 && rate <= 1e6) ||
		!(seconds > 0 && seconds <= 3600) || rate*seconds < 2 {
		fmt.Fprintln(os.Stderr, "pool-go: runs 1..101, tasks >= 1, rate 0..1e6, seconds 0..3600")
		os.Exit(2)
	}
	switch args[0] {
	case "throughput":
		throughput(runs, tasks)
	case "latency":
		latency(runs, rate, seconds)
	case "idle":
		idle()
	default:
		usage()
	}
}
