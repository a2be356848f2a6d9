// Package lanlink owns the master's side of the LAN link: one WebSocket
// client session at a time to the LAN manager's /v1/link endpoint, kept
// alive with pings and re-established with jittered backoff. It speaks the
// lanwire frames: every session starts with the handler's hello and waits
// for a welcome; frames from the LAN manager go to the handler one at a
// time, and the agent queues its own frames with Send. Deciding what to
// claim, spawn or report is the agent's job, not this package's.
package lanlink
