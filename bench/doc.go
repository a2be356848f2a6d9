// Command bench compares allex with PM2 and supervisord on the same tiny
// child program (bench/tinysrv-c in C, built without the C library by
// default, with it with -child libc; bench/tinysrv in Go with -child go),
// with every system's files on a fresh ext4 filesystem made for the run
// (-fs fresh, needs root; -fs tmp for a temp dir): how long N services
// take to start, how long a kill -9'd child takes to accept connections
// again, and the supervisor's own memory and CPU while idle. A fourth
// system, floor (bench/floor-c), is a reference that only restarts. It
// installs the peers itself (PM2 from the npm registry into
// .tools/bench/pm2, supervisord with apt-get), runs the systems in rounds,
// prints a table with allex/peer ratios and writes it as Markdown (default
// bench/results.md).
//
// The run is a check: it exits 1 when allex misses a gate, that is when
// a ratio allex/peer of medians from the run exceeds 0.20 against PM2 or
// supervisord (start of every N, every service published; kill -9 →
// accepting p50), or when allex's supervisor (master and keeper) uses
// more than 30 MB of memory (PSS) idle with 500 children. Gates whose systems did not
// run are "not run", not failures. The ratios to the floor and the p99s,
// with the hypervisor's steal beside them, are reported and never gated.
//
//	go run ./bench                 # full run: N=1,100,500, 100 kills, 10s idle
//	go run ./bench -quick          # smoke run: N=1,20, 10 kills, 2s idle
//	go run ./bench -only allex     # one system
//	go run ./bench -child go       # the Go child instead of the C one
//	go run ./bench -fs tmp         # files in a temp dir, not a fresh filesystem
//
// See bench/README.md for what exactly is timed.
package main
