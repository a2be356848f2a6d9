// Command bench compares allex with PM2 and supervisord on the same tiny
// child program (bench/tinysrv-c in C, built without the C library by
// default, with it with -child libc; bench/tinysrv in Go with -child go),
// with every system's files on a fresh ext4 filesystem made for the run
// (-fs fresh, needs root; -fs tmp for a temp dir): how long N services take to start, how long a kill -9'd child
// takes to accept connections again, and the supervisor's own memory and
// CPU while idle. It installs the peers itself (PM2 from the
// npm registry into .tools/bench/pm2, supervisord with apt-get), runs the
// systems one after the other, prints a table with allex/peer ratios and
// writes it as Markdown (default bench/results.md).
//
//	go run ./bench                 # full run: N=1,100,500, 100 kills, 10s idle
//	go run ./bench -quick          # smoke run: N=1,20, 10 kills, 2s idle
//	go run ./bench -only allex     # one system
//	go run ./bench -child go       # the Go child instead of the C one
//	go run ./bench -fs tmp         # files in a temp dir, not a fresh filesystem
//
// See bench/README.md for what exactly is timed.
package main
