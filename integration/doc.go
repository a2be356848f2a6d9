// Package integration holds the end-to-end tests: they build the real
// allexmaster, allexctl and allexlanmanager binaries and drive them over
// real unix sockets, gRPC and WebSockets on loopback.
package integration
