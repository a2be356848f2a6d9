//go:build windows

package config

// DefaultSocket is where the master serves allex.v1.MachineManager.
const DefaultSocket = `\\.\pipe\allexmachinemanager`
