// Package faults holds only tests: fault injection against the real
// allexmaster, allexlanmanager and allexctl binaries on loopback (see
// faults_test.go).
package faults
