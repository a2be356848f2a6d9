// Package children holds end-to-end tests of allexmaster children under the
// real daemon: the Go child library (child/), the readiness modes, graceful
// stops through allex.v1.Process versus signals, and the examples in
// examples/ (the Go service, the Node.js child and the unmodified
// third-party program from the config snippet).
package children
