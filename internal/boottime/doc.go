// Package boottime reads the clock that lease deadlines are written in:
// CLOCK_BOOTTIME on Linux, which keeps counting while the machine is
// suspended and is the same in every process, so a deadline computed by
// the master means the same instant to its keeper.
package boottime
