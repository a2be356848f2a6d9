// Command scale measures how fast one LAN manager places needs on many
// masters: it builds and starts the real allexlanmanager (fresh data dir,
// default fencing, pinned to one CPU), simulates masters that speak the
// real link protocol (a WebSocket each, a real TCP listener per granted
// service on the master's own 127.x.y.z address), adds needs in batches
// through the admin API while single needs arrive at a steady rate, and
// reads the results off the watch stream and /proc: placements per
// second, need → published p50/p99, the LAN manager's peak RSS and CPU
// per placement, and optionally how long a dead master's services take
// to be published elsewhere.
//
//	go run ./bench/scale -config small            # 100 masters × 10,000 needs
//	go run ./bench/scale -config large -drop      # 1,000 × 100,000, then kill a master
//
// Masters run in worker processes (this binary re-executed) so that each
// stays under the descriptor limit; what a master decides (run or
// decline a grant) is the Policy in policy.go. See README.md.
package main
