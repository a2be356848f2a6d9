// Package nemesis holds only tests: a nemesis run against the real
// allexlanmanager and allexmaster binaries on a LAN of network namespaces
// (package internal/netns). Masters are killed, frozen, cut off, cloned
// and doubled, and the LAN manager is killed, in an order drawn from a
// printed seed, while a checker samples every process on the machine and
// the LAN manager's registry to hold the product to its promise: at most
// one live copy of an instance at any moment, no acknowledged need lost,
// and every need back to exactly one published copy within a bound after
// each fault. See nemesis_test.go for the flags and the report.
package nemesis
