// Package lan holds end-to-end tests and benchmarks of the LAN path: the
// real allexlanmanager, allexmaster and allexctl binaries on loopback,
// proving needs are granted once, spawned, port-checked, published,
// re-satisfied when children or masters die, and survive restarts.
//
//	go test -race ./integration/lan                        # the tests
//	go test -bench . -run '^$' ./integration/lan           # need→published, kill→republished
//
// Helpers live in internal/e2e (lan.go): StartLAN, StartLANMaster, the
// watch-stream recorder and port blocks that two masters never share.
package lan
