// Package lanetcd tests LAN managers that share their state through a
// real etcd cluster (etcd members on loopback or in network namespaces,
// started by the tests): one leads, the others stand by, and a leader
// that dies, pauses or is cut off is replaced without losing a need,
// without writing again, and without a master fencing. Linux only (the
// tests use Debian's etcd-server and network namespaces).
package lanetcd
