//go:build !windows

package main

import "syscall"

// killProcess sends SIGKILL, as an OOM kill or a crash would end a child.
func killProcess(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
