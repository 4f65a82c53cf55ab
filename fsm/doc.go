// Package fsm is the MDM's replicated state machine: the command envelope, the SQLite schema that
// materializes the cluster's metadata, the deterministic apply logic and the raft.FSM adapter.
// Nothing in this package reads a clock, draws randomness or touches the network.
package fsm
