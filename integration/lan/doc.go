// Package lan holds end-to-end tests and benchmarks of the LAN path: the
// real allexlanmanager, allexmaster and allexctl binaries on loopback,
// proving needs are granted once, spawned, port-checked, published,
// re-satisfied when children or masters die, and survive restarts.
package lan
