// Package jepsen is pflex's chaos harness: it runs an MDM cluster, drives concurrent clients
// while a nemesis injects faults, records every operation in a history and checks it
// (linearizability with porcupine, topology invariants, one leader per term, converged digests).
package jepsen
