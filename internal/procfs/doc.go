// Package procfs reads what allex needs of Linux's /proc: a process's
// state, process group and start time, and whether a process group still
// has a live member. The master, its spawner and the test harness all ask
// these questions; the parsing of /proc/<pid>/stat lives here once.
// Elsewhere than Linux the files do not exist and every read fails.
package procfs
