// Package machinesock owns the default address of the machine socket,
// where allexmaster serves allex.v1.MachineManager: one declaration for the
// master's config, allexctl and the child library, which imports nothing
// else of the agent.
package machinesock
