// bench/fiber/fiber.go: the fiber bench's Go peers (goroutines, Debian's Go 1.19), figure by
// figure the workloads of bench/fiber/fiber.c on weft's fibers and bench/fiber/boost-fiber.cpp:
//
//	yield      two goroutines, GOMAXPROCS=1, each calling runtime.Gosched N times (default
//	           1,000,000): the time over 2N, ns per yield (each yield switches to the other one).
//	chan       two goroutines, GOMAXPROCS=1, ping-pong over two unbuffered channels of int, N
//	           round trips: the time over 2N, ns per hand-off (each one a switch).
//	spawn      GOMAXPROCS=P (--procs, 1 or 2): N goroutines (default 1,000,000) each calling
//	           wg.Done(), spawned by the main goroutine in waves of W (--wave, default 1,000), each
//	           wave waited for (wg.Wait) before the next: the time over N, ns per spawn + run +
//	           complete. The waves bound how many are alive at once, the same in every
//	           implementation.
//	parked     N goroutines (default 1,000,000), GOMAXPROCS=1, each parked receiving from one
//	           channel; when all are parked the peak RSS is read (getrusage RUSAGE_SELF ru_maxrss,
//	           this process alone: run.sh runs each figure as its own process), then the channel is
//	           closed and all of them finish. Printed: peak RSS in KiB and per goroutine in bytes
//	           (the RSS before spawning subtracted), and the time to spawn and park them.
//	pingpong2  ping-pong as in chan, GOMAXPROCS=2, each goroutine locked to its own OS thread
//	           (runtime.LockOSThread): every hand-off wakes the other thread. Without the locks
//	           Go keeps both goroutines on one P (runnext) and this would be chan again. Default
//	           N 100,000: a hand-off costs microseconds here.
//
// Every timed figure: one untimed warm-up run, then R runs (--runs, default 7), printed as
//
//	name=FIGURE impl=go ns_per_op=MEDIAN min=MIN max=MAX runs=R n=N [threads=P]
//	name=parked impl=go fibers=N peak_rss_kb=K bytes_per_fiber=B spawn_park_ns_per_op=T
//
// Left out: garbage collection (the loops allocate nothing per operation, except spawn's
// goroutine records and parked's stacks, which the runtime recycles), preemption, and the
// netpoller. Built by run.sh with `go build` and GO111MODULE=off (standard library only).
//
//	fiber-go FIGURE [--n N] [--runs R] [--procs P] [--wave W]
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

var wave = 1000

func yieldRun(n int) time.Duration {
	var wg sync.WaitGroup
	wg.Add(2)
	t0 := time.Now()
	for k := 0; k < 2; k++ {
		go func() {
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

func pingPong(n int, lock bool) time.Duration {
	ping := make(chan int)
	pong := make(chan int)
	var wg sync.WaitGroup
	wg.Add(2)
	t0 := time.Now()
	go func() {
		if lock {
			runtime.LockOSThread()
		}
		for i := 0; i < n; i++ {
			ping <- i
			<-pong
		}
		wg.Done()
	}()
	go func() {
		if lock {
			runtime.LockOSThread()
		}
		for i := 0; i < n; i++ {
			v := <-ping
			pong <- v
		}
		wg.Done()
	}()
	wg.Wait()
	return time.Since(t0)
}

func spawnRun(n int) time.Duration {
	var wg sync.WaitGroup
	t0 := time.Now()
	for done := 0; done < n; {
		w := wave
		if n-done < w {
			w = n - done
		}
		wg.Add(w)
		for i := 0; i < w; i++ {
			go wg.Done()
		}
		wg.Wait()
		done += w
	}
	return time.Since(t0)
}

func maxRSSKiB() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return ru.Maxrss
}

func parked(n int) {
	runtime.GOMAXPROCS(1)
	before := maxRSSKiB()
	release := make(chan struct{})
	var parkedWg, doneWg sync.WaitGroup
	parkedWg.Add(n)
	doneWg.Add(n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			parkedWg.Done()
			<-release
			doneWg.Done()
		}()
	}
	parkedWg.Wait()
	// the last goroutines have called Done but may not have parked yet: let them
	for i := 0; i < 10; i++ {
		runtime.Gosched()
	}
	el := time.Since(t0)
	peak := maxRSSKiB()
	close(release)
	doneWg.Wait()
	fmt.Printf("name=parked impl=go fibers=%d peak_rss_kb=%d bytes_per_fiber=%d "+
		"spawn_park_ns_per_op=%.1f\n", n, peak, (peak-before)*1024/int64(n),
		float64(el.Nanoseconds())/float64(n))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fiber-go yield|chan|spawn|parked|pingpong2 "+
			"[--n N] [--runs R] [--procs P] [--wave W]")
		os.Exit(2)
	}
	fig := os.Args[1]
	n, runs, procs := 0, 7, 1
	nGiven := false
	for i := 2; i < len(os.Args); i++ {
		if i+1 >= len(os.Args) {
			fmt.Fprintf(os.Stderr, "fiber-go: %s needs a value\n", os.Args[i])
			os.Exit(2)
		}
		v, err := strconv.Atoi(os.Args[i+1])
		if err != nil || v < 1 {
			fmt.Fprintf(os.Stderr, "fiber-go: bad value for %s\n", os.Args[i])
			os.Exit(2)
		}
		switch os.Args[i] {
		case "--n":
			n = v
			nGiven = true
		case "--runs":
			runs = v
		case "--procs":
			procs = v
		case "--wave":
			wave = v
		default:
			fmt.Fprintf(os.Stderr, "fiber-go: unknown option %s\n", os.Args[i])
			os.Exit(2)
		}
		i++
	}
	if n == 0 {
		n = 1000000
	}
	var run func() time.Duration
	per := float64(n)
	threads := ""
	switch fig {
	case "yield":
		runtime.GOMAXPROCS(1)
		run = func() time.Duration { return yieldRun(n) }
		per = 2 * float64(n)
	case "chan":
		runtime.GOMAXPROCS(1)
		run = func() time.Duration { return pingPong(n, false) }
		per = 2 * float64(n)
	case "pingpong2":
		if n == 1000000 && !nGiven {
			n = 100000
		}
		runtime.GOMAXPROCS(2)
		run = func() time.Duration { return pingPong(n, true) }
		per = 2 * float64(n)
		threads = " threads=2"
	case "spawn":
		runtime.GOMAXPROCS(procs)
		run = func() time.Duration { return spawnRun(n) }
		threads = fmt.Sprintf(" threads=%d wave=%d", procs, wave)
	case "parked":
		parked(n)
		return
	default:
		fmt.Fprintf(os.Stderr, "fiber-go: no figure named %s\n", fig)
		os.Exit(2)
	}
	run() // warm-up
	ns := make([]float64, runs)
	for r := 0; r < runs; r++ {
		ns[r] = float64(run().Nanoseconds()) / per
	}
	sort.Float64s(ns)
	fmt.Printf("name=%s impl=go ns_per_op=%.2f min=%.2f max=%.2f runs=%d n=%d%s\n", fig,
		ns[runs/2], ns[0], ns[runs-1], runs, n, threads)
}
