//go:build windows

package main

import "os"

// killProcess terminates the process at once.
func killProcess(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
