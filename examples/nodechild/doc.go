// Package nodechild holds an example allexmaster child written in Node.js
// (index.js, with its npm dependencies pinned in package.json and
// package-lock.json). The Go package exists only for node_test.go, which runs
// the example against an in-test master.
package nodechild
