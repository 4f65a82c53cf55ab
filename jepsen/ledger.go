package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"pflex/internal/api"
)

// dataPathFile is where Final saves the ledger totals and replica checksums, so a re-check
// of a report (pflex jepsen -check) sees them too.
const dataPathFile = "datapath.json"

// dataPathSnapshot is what the block workload reads from the cluster after recovery.
type dataPathSnapshot struct {
	VolumeID     int64            `json:"volume_id"`
	SDSFaults    int              `json:"sds_faults"` // SDS kills, pauses and data path cuts during the run
	Ledger       api.LedgerTotals `json:"ledger"`
	LedgerStable bool             `json:"ledger_stable"` // unchanged for 3 s before it was taken
	// Replicas: chunk -> SDS id -> CRC-32C of the chunk, for allocated replicas.
	Replicas      map[int64]map[string]string `json:"replicas"`
	ReplicaErrors []string                    `json:"replica_errors,omitempty"`
	// SDCLocalReads: reads the SDC served from the SDS devices on its host under read grants
	// (sds/DESIGN.md "Local reads"; 0 where SDC and SDSs do not share a host, -1: unknown),
	// so a report shows whether the checked history went through them.
	SDCLocalReads int64 `json:"sdc_local_reads"`
	// SDCRelayed: IO attempts the SDC sent through a chunk's secondary because it could not
	// reach the primary (sdc/DESIGN.md "Relayed IO"; -1: unknown).
	SDCRelayed int64 `json:"sdc_relayed"`
	// Settled: the pool reported health OK and every chunk had two equal copies before the
	// checksums were taken (rebuilds and moves done); false when that did not happen in time.
	Settled bool `json:"settled"`
}

func readDataPathSnapshot(dir string) (dataPathSnapshot, error) {
	var s dataPathSnapshot
	b, err := os.ReadFile(filepath.Join(dir, dataPathFile))
	if err != nil {
		return s, fmt.Errorf("no ledger snapshot: %v", err)
	}
	return s, json.Unmarshal(b, &s)
}

// stableLedger reads the volume's ledger totals until they have not changed for quiet (SDSs
// send their counts every second), at most 30 s.
func stableLedger(ctx context.Context, e *Env, quiet time.Duration) (api.LedgerTotals, bool, error) {
	var last api.LedgerTotals
	since := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		t, err := ledger(ctx, e.Admin, e.Data.VolumeID())
		if err != nil {
			return last, false, err
		}
		if t != last {
			last, since = t, time.Now()
		}
		if time.Since(since) >= quiet {
			return last, true, nil
		}
		if time.Now().After(deadline) {
			return last, false, nil
		}
		sleep(ctx, 250*time.Millisecond)
	}
}

// getJSON GETs url and decodes its JSON answer into v.
func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%d %s", resp.StatusCode, body)
	}
	return json.Unmarshal(body, v)
}

// sdcCounters reads from the SDC's status how many reads it served from SDS devices under read
// grants (sds/DESIGN.md "Local reads") and how many IO attempts it relayed through a secondary;
// both -1 when its status could not be read.
func sdcCounters(ctx context.Context, d DataPathCluster) (localReads, relayed int64) {
	var st struct {
		SharedMemory *struct {
			LocalReads int64 `json:"local_reads"`
		} `json:"shared_memory"`
		Exports []struct {
			Relayed int64 `json:"relayed"`
		} `json:"exports"`
	}
	if err := getJSON(ctx, &http.Client{Timeout: 10 * time.Second}, "http://"+d.SDCAPI()+"/status", &st); err != nil {
		return -1, -1
	}
	if st.SharedMemory != nil {
		localReads = st.SharedMemory.LocalReads
	}
	for _, e := range st.Exports {
		relayed += e.Relayed
	}
	return localReads, relayed
}

// replicaChecksums asks every SDS for the CRC-32C of its replicas of the volume.
func replicaChecksums(ctx context.Context, d DataPathCluster, volumeID int64) (map[int64]map[string]string, []string) {
	out := map[int64]map[string]string{}
	var errs []string
	hc := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < d.SDSCount(); i++ {
		url := fmt.Sprintf("http://%s/volumes/%d/chunks?checksum=1", d.SDSAPI(i), volumeID)
		var list struct {
			Chunks []struct {
				Chunk     int64  `json:"chunk"`
				Allocated bool   `json:"allocated"`
				CRC32C    string `json:"crc32c"`
			} `json:"chunks"`
		}
		if err := getJSON(ctx, hc, url, &list); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", d.SDSID(i), err))
			continue
		}
		for _, c := range list.Chunks {
			if !c.Allocated {
				continue
			}
			if out[c.Chunk] == nil {
				out[c.Chunk] = map[string]string{}
			}
			out[c.Chunk][d.SDSID(i)] = c.CRC32C
		}
	}
	return out, errs
}

// CheckReplicas: every allocated chunk is on exactly two SDSs with equal CRC-32C, once the pool
// settled (health OK: SDS kills rebuilt, moves done). A run whose pool did not settle in time
// after SDS kills (say, two SDSs killed at once left chunks without a copy) reports its
// differences without counting them.
func CheckReplicas(s dataPathSnapshot) CheckResult {
	res := CheckResult{Name: "replicas identical (two copies per chunk, equal CRC-32C)", Valid: true}
	res.Details = append(res.Details, s.ReplicaErrors...)
	if len(s.ReplicaErrors) > 0 {
		res.Valid = false
	}
	var chunks []int64
	for c := range s.Replicas {
		chunks = append(chunks, c)
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i] < chunks[j] })
	bad := 0
	for _, c := range chunks {
		sums := s.Replicas[c]
		var vals []string
		for id, sum := range sums {
			vals = append(vals, id+"="+sum)
		}
		sort.Strings(vals)
		same := len(sums) == 2
		for _, sum := range sums {
			for _, other := range sums {
				same = same && sum == other && sum != ""
			}
		}
		if !same {
			bad++
			res.Details = append(res.Details, fmt.Sprintf("chunk %d: %v", c, vals))
		}
	}
	res.Summary = fmt.Sprintf("%d chunks, %d with missing or different copies", len(chunks), bad)
	if bad > 0 {
		if s.SDSFaults > 0 && !s.Settled {
			res.Summary += fmt.Sprintf(" (not counted: %d SDS faults and the pool did not settle to OK in time)", s.SDSFaults)
		} else {
			res.Valid = false
		}
	}
	return res
}

// LedgerBounds is what the history says the token ledger of the volume must hold.
type LedgerBounds struct {
	MinWriteBytes, MaxWriteBytes int64
	MinReadBytes, MaxReadBytes   int64
	MinWriteOps, MaxWriteOps     int64
	MinReadOps, MaxReadOps       int64
}

// BlockLedgerBounds derives the ledger bounds from a block history. Every block op is one
// 4 KiB NBD request inside one chunk, so the SDC sends exactly one SDS request for it:
//   - an acknowledged write was applied by the primary and the secondary, each of which counts
//     one write op of 4 KiB: 2 ops, 8 KiB;
//   - an acknowledged read is counted once, by the SDS that served it: 1 op, 4 KiB;
//   - a write of unknown outcome, or a read that failed after it was sent (EIO, timeout, broken
//     connection), may have been counted by zero, one or two SDSs (writes) or zero or one
//     (reads): they widen the upper bound only;
//   - a write or read that failed before anything was sent (no connection, refused handshake,
//     EINVAL/EPERM) counts nothing.
//
// The harness's own NBD client reads nothing during its handshake (unlike qemu-io), and the
// ledger only counts client IO, so nothing else reaches it.
func BlockLedgerBounds(ops []Op) LedgerBounds {
	var b LedgerBounds
	for _, op := range ops {
		sent := op.Outcome != Fail || !notSent(op.Error)
		switch {
		case op.F == "write" && op.Outcome == OK:
			b.MinWriteOps += 2
			b.MaxWriteOps += 2
		case op.F == "write" && sent:
			b.MaxWriteOps += 2
		case op.F == "read" && op.Outcome == OK:
			b.MinReadOps++
			b.MaxReadOps++
		case op.F == "read" && sent:
			b.MaxReadOps++
		}
	}
	b.MinWriteBytes, b.MaxWriteBytes = b.MinWriteOps*BlockSize, b.MaxWriteOps*BlockSize
	b.MinReadBytes, b.MaxReadBytes = b.MinReadOps*BlockSize, b.MaxReadOps*BlockSize
	return b
}

// notSent reports whether a failed op's error shows that the request never left the client.
func notSent(errText string) bool {
	return errText == "" || hasAnyPrefix(errText, "dial tcp", ErrNBDHandshake.Error(), ErrNBDRefused.Error())
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

// CheckLedger compares the ledger totals with the bounds of the history. Without SDS faults
// both bounds must hold (exact equality when no op was of unknown outcome). With SDS kills a
// killed SDS loses the counts it had not sent yet (up to a second's worth), and with kills,
// pauses or cuts a retried IO may be counted by a second SDS, or twice by a paused one that finished
// the first attempt after its primary gave up on it; so neither bound is a promise: the
// comparison is reported, not judged.
func CheckLedger(ops []Op, s dataPathSnapshot) CheckResult {
	b := BlockLedgerBounds(ops)
	t := s.Ledger
	res := CheckResult{Name: "token ledger matches the acknowledged IO"}
	within := func(v, lo, hi int64) bool { return v >= lo && v <= hi }
	res.Details = []string{
		fmt.Sprintf("write bytes %d, history allows [%d, %d]", t.WriteBytes, b.MinWriteBytes, b.MaxWriteBytes),
		fmt.Sprintf("write ops   %d, history allows [%d, %d]", t.WriteOps, b.MinWriteOps, b.MaxWriteOps),
		fmt.Sprintf("read bytes  %d, history allows [%d, %d]", t.ReadBytes, b.MinReadBytes, b.MaxReadBytes),
		fmt.Sprintf("read ops    %d, history allows [%d, %d]", t.ReadOps, b.MinReadOps, b.MaxReadOps),
		fmt.Sprintf("reads the SDC served from SDS devices under read grants (reported to the SDSs): %d", s.SDCLocalReads),
		fmt.Sprintf("IO attempts the SDC relayed through a secondary (counted once, at the primary): %d", s.SDCRelayed),
	}
	ok := within(t.WriteBytes, b.MinWriteBytes, b.MaxWriteBytes) && within(t.WriteOps, b.MinWriteOps, b.MaxWriteOps) &&
		within(t.ReadBytes, b.MinReadBytes, b.MaxReadBytes) && within(t.ReadOps, b.MinReadOps, b.MaxReadOps)
	switch {
	case s.SDSFaults > 0:
		res.Valid = true
		res.Summary = fmt.Sprintf("not comparable after %d SDS faults (counts lost or repeated); within bounds: %v", s.SDSFaults, ok)
	case !s.LedgerStable:
		res.Inconclusive = true
		res.Summary = "the ledger did not settle within 30 s"
	default:
		res.Valid = ok
		res.Summary = fmt.Sprintf("%d bytes written (2 copies), %d read, within the history's bounds: %v", t.WriteBytes, t.ReadBytes, ok)
	}
	return res
}
