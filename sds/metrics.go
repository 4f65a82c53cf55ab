package sds

import (
	"net/http"

	"pflex/internal/promtext"
)

// metrics serves GET /metrics: membership, the chunk store and the data path's counters of
// /status.
func (s *Service) metrics(w http.ResponseWriter, _ *http.Request) {
	p := promtext.ForHTTP(w)
	s.agent.WriteMetrics(p, "sds")
	writeSDSMetrics(p, s.Status())
}

func writeSDSMetrics(p *promtext.Writer, st Status) {
	node := []string{"node", st.ID}
	counter := func(name, help string, v int64) { p.CounterOf(name, help, float64(v), node...) }
	gauge := func(name, help string, v float64) { p.GaugeOf(name, help, v, node...) }
	gauge("pflex_sds_capacity_bytes", "Device capacity.", float64(st.Store.CapacityBytes))
	gauge("pflex_sds_free_bytes", "Device space not allocated to chunks.", float64(st.Store.FreeBytes))
	gauge("pflex_sds_chunks", "Chunk copies held.", float64(st.Store.Chunks))
	gauge("pflex_sds_lease_remaining_seconds", "How long the lease from the MDM leader still runs (0: none).", float64(st.LeaseRemainingMS)/1000)
	d := st.Data
	gauge("pflex_sds_connections", "Data connections open.", float64(d.Connections))
	counter("pflex_sds_reads_total", "Client READs served as primary.", d.Reads)
	counter("pflex_sds_writes_total", "Client WRITEs served as primary.", d.Writes)
	counter("pflex_sds_replica_writes_total", "Writes applied as secondary.", d.ReplicaWrites)
	counter("pflex_sds_trims_total", "TRIM and WRITE_ZEROES, primary and replica.", d.Trims)
	counter("pflex_sds_flushes_total", "FLUSHes.", d.Flushes)
	counter("pflex_sds_refused_total", "Requests refused (auth, epoch, role or range).", d.Refused)
	counter("pflex_sds_retry_answers_total", "Requests answered Retry.", d.Retries)
	counter("pflex_sds_degraded_writes_total", "Writes acknowledged with this SDS's copy alone.", d.DegradedWrites)
	counter("pflex_sds_no_lease_total", "Requests refused for want of a lease.", d.NoLease)
	counter("pflex_sds_replayed_writes_total", "Retried writes already held, not applied again.", d.ReplayedWrites)
	counter("pflex_sds_replica_out_of_order_total", "Replica writes refused as older than one applied.", d.ReplicaOutOfOrder)
	counter("pflex_sds_relayed_total", "Requests relayed for clients that cannot reach their SDS.", d.Relayed)
	counter("pflex_sds_relay_failed_total", "Relays that could not reach their SDS either.", d.RelayFailed)
	counter("pflex_sds_local_reads_total", "Reads SDCs on this host did from its devices under grants.", d.LocalReads)
	counter("pflex_sds_rebuild_bytes_sent_total", "Bytes copied to rebuild targets.", d.Rebuild.BytesSent)
	counter("pflex_sds_rebuild_chunks_received_total", "Rebuild pieces taken as a target.", d.Rebuild.ChunksReceived)
	counter("pflex_sds_ack_batches_sent_total", "Token ACK batches the MDM leader committed.", d.AckBatchesSent)
	counter("pflex_sds_ack_failures_total", "Token ACK batches that failed and were retried.", d.AckFailures)
}
