// Package spawner supervises one child process over its whole life: it
// starts it in its own process group with the ALLEX_* environment, waits for
// it to become ready, restarts it according to a restart policy with
// exponential backoff and crash-loop detection, and stops it gracefully,
// making sure no member of its process group outlives the supervisor. It
// copies the child's stdout and stderr from pipes into size-rotated log
// files (package logfile) that outlive its runs.
//
// The package owns nothing beyond one child per Supervisor: port allocation,
// the table of children and the master socket belong to the agent.
package spawner
