//go:build windows

package machinesock

// Default is the machine named pipe unless configured otherwise.
const Default = `\\.\pipe\allexmachinemanager`
