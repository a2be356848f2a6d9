// Package statefile owns the master's record of its live children in the
// state directory, so that a master killed without stopping them (kill -9,
// OOM) can find and stop them on its next start.
//
// The record is an append-only journal, children.jsonl: one JSON object a
// line, {"op":"add","instance":...,"pid":...,"start":...} when a child runs
// and {"op":"del","instance":...,"pid":...} when it has exited. Each record
// is one write() on a descriptor kept open with O_APPEND, so a child's start
// or exit costs one small write and no file creation. There is no fsync:
// a killed master loses nothing the page cache holds, and a crash of the
// machine kills the children too. When the journal holds more than twice
// the live entries plus 256 lines, it is rewritten to the live set (tmp
// file and rename), which keeps it short at a cost that is rare.
//
// Load replays the journal (and children.json, the whole-file table of
// earlier versions); a torn or malformed line is skipped with a warning.
// Killing the leftovers it returns is the agent's business.
package statefile
