// Package server owns the master's local IPC endpoint: it listens on the
// machine socket (by default internal/machinesock's: /tmp/allexmachinemanager,
// or the named pipe \\.\pipe\allexmachinemanager on Windows), identifies
// callers by the socket's peer credentials, and serves
// allex.v1.MachineManager, the standard gRPC health service and reflection
// there on behalf of the agent.
package server
