//go:build !windows

package machinesock

// Default is the machine socket's path unless configured otherwise.
const Default = "/tmp/allexmachinemanager"
