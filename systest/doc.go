// Package systest holds system tests that run several pflex roles together as real processes
// (MDMs, SDSs, SDCs): membership, failure detection and leader following across roles. Roles
// never import each other; only these tests see them all.
package systest
