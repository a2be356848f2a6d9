// Package logfile owns a child's log files on disk: a Writer appends to a
// file and rotates it by size, supervisord style (<name> is the live file,
// <name>.1 the newest rotated one, <name>.<files-1> the oldest), so one
// stream never takes more than size × files bytes; a Reader reads them
// back in order and follows the live file across rotations, as tail -F
// does. It also owns the limits' defaults and bounds.
package logfile
