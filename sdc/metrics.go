package sdc

import (
	"net/http"

	"pflex/internal/promtext"
)

// metrics serves GET /metrics: membership, then per export the IO counters of /status.
func (s *Service) metrics(w http.ResponseWriter, _ *http.Request) {
	p := promtext.ForHTTP(w)
	s.agent.WriteMetrics(p, Role)
	writeExportMetrics(p, s.cfg.ID, s.exporter.Status())
}

func writeExportMetrics(p *promtext.Writer, node string, st ExporterStatus) {
	type metric struct {
		name, help string
		counter    bool
		value      func(v VolumeStatus) float64
	}
	for _, m := range []metric{
		{"pflex_sdc_reads_total", "READ requests.", true, func(v VolumeStatus) float64 { return float64(v.Reads) }},
		{"pflex_sdc_writes_total", "WRITE requests.", true, func(v VolumeStatus) float64 { return float64(v.Writes) }},
		{"pflex_sdc_read_bytes_total", "Bytes read.", true, func(v VolumeStatus) float64 { return float64(v.ReadBytes) }},
		{"pflex_sdc_write_bytes_total", "Bytes written.", true, func(v VolumeStatus) float64 { return float64(v.WriteBytes) }},
		{"pflex_sdc_flushes_total", "FLUSH requests.", true, func(v VolumeStatus) float64 { return float64(v.Flushes) }},
		{"pflex_sdc_trims_total", "TRIM requests.", true, func(v VolumeStatus) float64 { return float64(v.Trims) }},
		{"pflex_sdc_write_zeroes_total", "WRITE_ZEROES requests.", true, func(v VolumeStatus) float64 { return float64(v.WriteZeroes) }},
		{"pflex_sdc_errors_total", "Requests that failed.", true, func(v VolumeStatus) float64 { return float64(v.Errors) }},
		{"pflex_sdc_timeouts_total", "Requests that failed at io_timeout.", true, func(v VolumeStatus) float64 { return float64(v.Timeouts) }},
		{"pflex_sdc_retries_total", "Attempts retried (new layout, token or connection).", true, func(v VolumeStatus) float64 { return float64(v.Retries) }},
		{"pflex_sdc_stale_epochs_total", "StaleEpoch and NotPrimary answers.", true, func(v VolumeStatus) float64 { return float64(v.StaleEpochs) }},
		{"pflex_sdc_layout_refreshes_total", "Layouts fetched from the MDM.", true, func(v VolumeStatus) float64 { return float64(v.LayoutRefreshes) }},
		{"pflex_sdc_local_reads_total", "Reads served from SDS devices on this host.", true, func(v VolumeStatus) float64 { return float64(v.LocalReads) }},
		{"pflex_sdc_relayed_total", "Attempts sent through another SDS (relayed IO).", true, func(v VolumeStatus) float64 { return float64(v.Relayed) }},
		{"pflex_sdc_throttled_total", "Requests that waited for the mapping's limits.", true, func(v VolumeStatus) float64 { return float64(v.QoS.Throttled) }},
		{"pflex_sdc_throttled_seconds_total", "Time requests waited for the mapping's limits.", true, func(v VolumeStatus) float64 { return v.QoS.ThrottledSeconds }},
		{"pflex_sdc_iops_limit", "The mapping's IOPS limit (0: none).", false, func(v VolumeStatus) float64 { return float64(v.QoS.IOPSLimit) }},
		{"pflex_sdc_bandwidth_limit_bytes", "The mapping's bandwidth limit in bytes per second (0: none).", false, func(v VolumeStatus) float64 { return float64(v.QoS.BandwidthLimitMBps) * (1 << 20) }},
		{"pflex_sdc_layout_epoch", "Epoch of the cached layout (-1: none yet).", false, func(v VolumeStatus) float64 { return float64(v.LayoutEpoch) }},
		{"pflex_sdc_size_bytes", "Volume size.", false, func(v VolumeStatus) float64 { return float64(v.SizeBytes) }},
	} {
		if m.counter {
			p.Counter(m.name, m.help)
		} else {
			p.Gauge(m.name, m.help)
		}
		for _, v := range st.Exports {
			p.Sample(m.name, m.value(v), "node", node, "volume", v.Name)
		}
	}
	p.GaugeOf("pflex_sdc_exports", "Volumes exported over NBD.", float64(len(st.Exports)), "node", node)
	p.GaugeOf("pflex_sdc_unreachable_sds", "SDS addresses the probes lost (their IO is relayed).", float64(len(st.UnreachableSDS)), "node", node)
	p.CounterOf("pflex_sdc_sds_dials_total", "Connections made to SDSs.", float64(st.SDSDials), "node", node)
}
