// Package agent is the machine agent's core: it owns the table of supervised
// children, ties the port office, the spawner and the LAN link together, and
// turns LAN needs into running, published services.
package agent
