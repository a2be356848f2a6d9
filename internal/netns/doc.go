// Package netns builds a small LAN of Linux network namespaces for tests:
// one namespace per host, each with a veth to a Linux bridge in a "switch"
// namespace, so several daemons that each think they own a machine can run
// on one box and be cut off from each other without touching the root
// namespace. A host runs commands inside its namespace, dials out of it
// (so the test process, which stays in the root namespace, can reach a
// service on the LAN), and can be cut from the LAN silently and healed.
//
// It needs root and iproute2 ("ip"); without them NewLAN skips the test.
// Everything it creates carries Prefix and a per-LAN tag naming the
// creating process, so a crashed run's namespaces are swept by the next
// NewLAN and never mistaken for a live run's. It is Linux only.
package netns
