// Package jsonkeys refuses JSON objects that repeat a key. encoding/json
// lets the last of two equal keys win silently, so a document that says
// one thing to a reader and another to the program gets through; the
// master's config file and the LAN manager's admin API and link frames
// refuse it with the key's path and position. It also renders byte
// offsets as line and column for such errors.
package jsonkeys
