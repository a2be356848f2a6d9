// Package lanetcd tests LAN managers that share their state through a
// real etcd cluster (three etcd members on loopback, started by the
// tests): one leads, the others stand by, and a leader that dies or
// pauses is replaced without losing a need and without writing again.
package lanetcd
