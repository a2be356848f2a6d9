// Package tcpcheck checks that a TCP port accepts connections: it connects
// and closes the connection at once with a reset, so no TIME_WAIT entry is
// left on the checked port. The LAN manager checks a service's ports with
// it before it publishes the service; the spawner's readiness probe falls
// back to it where the kernel's socket table cannot be asked.
package tcpcheck
