// Package modspec owns the one pipeline a module spec goes through, from
// the config file or allexctl's flags (names), over allex.v1.ModuleSpec
// (enums), to the supervisor (spawner values). Protocols, restart policies
// and readiness modes are converted by one table per kind (kinds.go), and
// Validate is the one check of a ModuleSpec's protocols, fixed ports,
// restart and readiness that config load, gRPC Start and allexctl share.
package modspec
