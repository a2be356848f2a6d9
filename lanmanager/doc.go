// Package lanmanager owns the LAN manager server: the set of needs
// (services that should run somewhere on the LAN), the registry of running
// services, the WebSocket link masters bid and report on, and the admin
// HTTP API. One HTTP server on one address carries all of it.
//
// # Link
//
// Masters connect to GET /v1/link (see package lanwire for the frames) with
// "Authorization: Bearer <token>"; the token is checked before the upgrade.
// State changes are serialized under one mutex, so exactly one master wins
// each need; port checks run outside it. A master that stays silent for
// three heartbeats is dropped; its granted-but-unspawned needs are offered
// again at once and its services stay published for the grace period, after
// which they are treated as down (removed, need recreated).
//
// Answers on the link: a claim that cannot be granted (unknown, already
// granted or satisfied, backing off, wrong module or machine, no capacity)
// gets a deny with the reason, since losing a race is normal; a frame
// that cannot be acted on (undecodable, wrong direction, spawned,
// spawn_failed or down for something this master does not hold) gets an
// error frame and changes nothing. Only a bad first frame or a frame over
// lanwire.MaxFrameSize closes the link. A spawned report is approved only
// when every protocol the need declares has a reported port (equal to its
// fixed port, if any) that accepts a TCP connection on the hello address.
// A down with restarting set removes the record but grants the recreated
// need straight back to the same master, which is restarting the child in
// place, unless the need is in a crash-loop backoff (then: stop). Needs
// lists carry at most Config.OfferWindow needs.
//
// # Admin API
//
// POST /v1/needs takes one need or a JSON array of needs, added all or none.
// Every endpoint except /healthz needs the same bearer token. Errors are
// JSON {"error": "..."} with 400 (bad input), 401 (token), 404 (unknown),
// 409 (instance already a need or service). Request bodies are limited to
// 1 MiB.
//
//	GET    /healthz                    "ok", no auth
//	GET    /v1/needs                   []adminapi.NeedStatus (pending, granted, satisfied)
//	POST   /v1/needs                   body lanwire.Need (strict) → 201 NeedStatus
//	DELETE /v1/needs/{instance}        removes the need, or stops and removes its service
//	GET    /v1/services?module=&instance=  []lanwire.ServiceRecord
//	GET    /v1/services/{instance}     lanwire.ServiceRecord (an instance named "watch"
//	                                   is reachable through ?instance=watch only)
//	GET    /v1/services/watch?module=  newline-delimited adminapi.ServiceEvent: one "up"
//	                                   per current service, then live "up"/"down" events
//	GET    /v1/machines                []adminapi.MachineInfo
//
// # Needs files
//
// Needs files hold {"needs":[<lanwire.Need>...]}, parsed strictly. Several
// files are layered: a later file's need replaces an earlier one with the
// same instance. At startup they are merged declaratively into the store:
// a file need that is neither stored nor running is added; a stored pending
// need from a file whose definition changed is updated; needs and services
// that came from a file ("file:<path>" origin) but are in none of the files
// any more are removed. Needs added through the API (origin "api") are
// never touched by files.
//
// # Persistence
//
// Needs and services live in a bbolt database in the data directory (or in
// memory). Grants are not persisted: after a restart granted needs are
// pending again, every known machine gets the grace period to reconnect and
// re-adopt its running children through its hello.
package lanmanager
