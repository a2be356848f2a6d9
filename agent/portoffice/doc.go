// Package portoffice owns the master's port book: which TCP port numbers
// are handed to which child (owner), per protocol range ("tcp", "http",
// "ws"). A port is handed out only when no owner holds it and no other
// program on the machine is listening on it, so children never share a
// port by accident.
package portoffice
