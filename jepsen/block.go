package jepsen

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"time"
)

// BlockSize is the size of one block register of the block workload.
const BlockSize = 4096

// blockStride places block k at k MiB: with the default 1 MiB chunks every block is in its own
// chunk, so the blocks spread over every pair of SDSs.
const blockStride = 1 << 20

// BlockWorkload reads and writes Options.Keys block registers through the SDC's NBD export.
// A write stores a unique 8-byte value repeated over the 4 KiB block; a read returns the value
// ("" for a block never written, all zeroes) or "torn:..." when the copies in the block differ,
// which no write produced and the register model rejects.
type BlockWorkload struct{}

// Name implements Workload.
func (*BlockWorkload) Name() string { return "block" }

// needsDataPath makes Run start SDSs and an SDC.
func (*BlockWorkload) needsDataPath() bool { return true }

// Setup implements Workload: nothing to create (the blocks read as zeroes, the empty value).
func (*BlockWorkload) Setup(ctx context.Context, e *Env) error {
	if e.Data == nil {
		return errors.New("jepsen: block workload needs a cluster with a data path")
	}
	return nil
}

func blockKey(k int) string { return fmt.Sprintf("b%d", k) }

// blockClient is one client process's NBD connection, reopened after any error.
type blockClient struct {
	e    *Env
	p    int
	conn *NBDConn
}

func (b *blockClient) close() {
	if b.conn != nil {
		b.conn.Close()
		b.conn = nil
	}
}

// op runs one read (value == "") or write of block k and records it.
func (b *blockClient) op(ctx context.Context, k int, value string) Op {
	h := b.e.History
	addr, export := b.e.Data.NBD()
	op := Op{Process: b.p, F: "read", Key: blockKey(k), Node: "sdc", Invoke: h.Now()}
	if value != "" {
		op.F, op.Value = "write", value
	}
	finish := func(o Outcome, err error) Op {
		op.Return, op.Outcome = h.Now(), o
		if err != nil {
			op.Error = err.Error()
		}
		return h.Add(op)
	}
	timeout := b.e.Options.OpTimeout
	if b.conn == nil {
		c, err := DialNBD(ctx, addr, export, timeout)
		if err != nil {
			return finish(Fail, err) // nothing was sent
		}
		b.conn = c
	}
	deadline := time.Now().Add(timeout)
	off := uint64(k) * blockStride
	if value == "" {
		data, err := b.conn.Read(off, BlockSize, deadline)
		if err != nil {
			b.close()
			return finish(Fail, err) // a read changes nothing
		}
		op.Output = decodeBlock(data)
		return finish(OK, nil)
	}
	err := b.conn.Write(off, encodeBlock(value), deadline)
	switch {
	case err == nil:
		return finish(OK, nil)
	case errors.Is(err, ErrNBDRefused):
		return finish(Fail, err)
	}
	// EIO, timeout, broken connection: the SDC may have written it, or may still.
	b.close()
	return finish(Unknown, err)
}

// encodeBlock fills a block with the 8-byte value (16 hex digits) repeated.
func encodeBlock(value string) []byte {
	v, _ := hex.DecodeString(value)
	out := make([]byte, BlockSize)
	for i := 0; i < BlockSize; i += len(v) {
		copy(out[i:], v)
	}
	return out
}

// decodeBlock returns the value a block holds: "" for zeroes, the hex of the repeated 8
// bytes, or torn:<first>:<offset of the first differing copy>.
func decodeBlock(b []byte) string {
	first := b[:8]
	for i := 8; i+8 <= len(b); i += 8 {
		if string(b[i:i+8]) != string(first) {
			return fmt.Sprintf("torn:%x:%d", first, i)
		}
	}
	if binary.BigEndian.Uint64(first) == 0 {
		return ""
	}
	return hex.EncodeToString(first)
}

// blockValue is the unique value of client p's n-th write (never zero).
func blockValue(p, n int) string {
	return fmt.Sprintf("%016x", uint64(p+1)<<40|uint64(n+1))
}

// Client implements Workload: even odds of reading or writing a random block.
func (w *BlockWorkload) Client(stop, ctx context.Context, e *Env, p int, rng *rand.Rand) {
	b := &blockClient{e: e, p: p}
	defer b.close()
	for n := 0; stop.Err() == nil; {
		k := rng.Intn(e.Options.Keys)
		if rng.Intn(2) == 0 {
			b.op(ctx, k, "")
		} else {
			op := b.op(ctx, k, blockValue(p, n))
			n++
			if op.Outcome == Fail && b.conn == nil {
				sleep(stop, 100*time.Millisecond) // no connection: do not spin
			}
		}
		e.pause(stop, rng)
	}
}

// Final implements Workload: one acknowledged read of every block (retried), then the ledger
// totals once they are stable and the replicas' checksums, both saved in the report.
func (w *BlockWorkload) Final(ctx context.Context, e *Env) error {
	b := &blockClient{e: e, p: e.finalProcess()}
	defer b.close()
	for k := 0; k < e.Options.Keys; k++ {
		for {
			if op := b.op(ctx, k, ""); op.Outcome == OK {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("final read of %s: %w", blockKey(k), ctx.Err())
			}
			sleep(ctx, 200*time.Millisecond)
		}
	}
	b.close()
	snap := dataPathSnapshot{VolumeID: e.Data.VolumeID()}
	for _, op := range e.History.Ops() {
		if op.Process == NemesisProcess && sdsFault(op.Key, op.F) {
			snap.SDSFaults++
		}
	}
	snap.SDCLocalReads, snap.SDCRelayed = sdcCounters(ctx, e.Data)
	var err error
	snap.Ledger, snap.LedgerStable, err = stableLedger(ctx, e, 3*time.Second)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	snap.Replicas, snap.ReplicaErrors, snap.Settled = settledReplicas(ctx, e, snap.VolumeID, 2*time.Minute)
	buf, _ := json.MarshalIndent(snap, "", "  ")
	return os.WriteFile(filepath.Join(e.Options.ReportDir, dataPathFile), append(buf, '\n'), 0o644)
}

// Check implements Workload.
func (w *BlockWorkload) Check(ops []Op, reportDir string, timeout time.Duration) []CheckResult {
	res := []CheckResult{checkRegisters("linearizable (block registers through NBD, porcupine register per block)",
		ops, reportDir, timeout)}
	snap, err := readDataPathSnapshot(reportDir)
	if err != nil {
		return append(res, CheckResult{Name: "token ledger", Inconclusive: true, Summary: err.Error()})
	}
	return append(res, CheckLedger(ops, snap), CheckReplicas(snap))
}
