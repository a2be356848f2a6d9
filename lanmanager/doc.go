// Package lanmanager owns the LAN manager server: the set of needs
// (services that should run somewhere on the LAN), the registry of running
// services, the WebSocket link masters bid and report on, and the admin
// HTTP API. One HTTP server on one address carries all of it.
//
// # Link
//
// Masters connect to GET /v1/link (see package lanwire for the frames) with
// "Authorization: Bearer <token>"; the token is checked before the upgrade,
// and the hello must follow within Config.HelloTimeout. Connections that
// have not presented the token are capped and timed out (connguard), so
// strangers cannot take the descriptors admin calls and links need.
// Each link's reader decodes its frames and hands them to one loop, which
// owns the state (package lanstate): it applies events as they come
// (admin calls first), commits what they changed in one transaction (at
// most every 10 ms under load, while the next events are applied), and
// only then sends the batch's frames, answers its admin calls and
// notifies watchers. A grant is therefore on disk before its master hears
// of it. A link's writer sends the frames queued for it in one write.
// Port checks run outside the loop. If a commit fails the LAN manager
// stops (Run returns the error): a restart resumes from the last commit,
// and nothing of the failed batch has left.
//
// Each instance has at most one copy: the grant of its need to one master,
// with an epoch that only grows, until that master reports it gone or is
// fenced (lanwire/fencing.go has the timeline). A master whose link ends
// keeps its copies (its services stay published, its granted needs are
// not offered) until its fence: at once when it closed with CloseNoCopies,
// exit-fence + margin after a link that ended without a close frame (its
// process is gone), lease + margin after its last heard time otherwise.
// The pong to a master's ping renews its lease and is only sent while its
// session is live. A master that says hello as a machine id whose current
// master has another identity is refused while that machine may run
// copies.
//
// Needs are placed by lanstate (place.go) on masters of link protocol 2
// (lanwire/frames.go, "Placement"); a declined grant goes elsewhere, and
// not back to that master for Config.DeclineHold. At most
// Config.MaxPlacing copies are granted and unpublished at once, and
// waiting needs are taken from each admin request in turn (queue.go).
// Masters of the older claims protocol get needs lists instead.
//
// Answers on the link: a claim that cannot be granted (unknown, already
// granted or satisfied, backing off, wrong module or machine, no capacity)
// gets a deny with the reason, since losing a race is normal; a frame
// that cannot be acted on (undecodable, wrong direction, a report about a
// copy that is not this master's under that epoch) gets an error frame and
// changes nothing, and a stale spawned report also gets a stop. Only a bad
// first frame or a frame over lanwire.MaxFrameSize closes the link. A
// spawned report is approved only when every protocol the need declares
// has a reported port (equal to its fixed port, if any) that accepts a TCP
// connection on the hello address. A down with restarting set removes the
// record but keeps the copy granted to the same master, which is
// restarting the child in place, unless the need is in a crash-loop
// backoff (then: stop). A grant not reported spawned within the need's
// timeout, a copy that fails its port check and the copy of a removed need
// are told to stop; the need is offered again (or forgotten) only once the
// master confirms with down or spawn_failed, or is fenced. Needs lists
// carry at most Config.OfferWindow needs.
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
// Instances (need and copy, epoch included), the identities of machines
// that hold copies, and the epoch counter live in a bbolt database in the
// data directory (or in memory). After a restart every machine that holds
// copies gets lease + margin to come back and report them before they end;
// pending needs are offered at once.
package lanmanager
