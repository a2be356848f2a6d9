// Package lanpki owns the LAN's certificates: its CA, the LAN managers' and
// masters' certificates, join tokens, and the TLS configurations that check
// them.
//
// A LAN manager's certificate names ServerName and serves as both server
// and client (LAN managers relay links to each other). A master's
// certificate names its machine id and is a client certificate only, so it
// can never pose as a LAN manager. A master that has no certificate yet
// joins with a token that pins the CA by its fingerprint (PinnedConfig).
package lanpki
