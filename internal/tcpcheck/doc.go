// Package tcpcheck checks that a TCP port accepts connections: it connects
// and closes the connection at once with a FIN, as a client with nothing to
// say would. A reset instead makes well-behaved servers log an error
// (python's http.server prints a traceback for each); the TIME_WAIT entry a
// FIN leaves is the checker's, as a client's is, never one on the checked
// port. The LAN manager checks a service's ports with it before it
// publishes the service; the spawner's readiness probe falls back to it
// where the kernel's socket table cannot be asked.
package tcpcheck
