package mdm

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"slices"

	"pflex/fsm"
	"pflex/internal/layout"
)

// Rebalance. When a pool is fully protected and nothing is being copied, the planner compares,
// volume by volume, how many chunk copies each up SDS of the protection domain holds (by
// placement, written or not: what a thin volume will use as it fills) with an even share
// (two copies of every chunk spread over the up SDSs, weighted by capacity). When the fullest SDS
// holds more than its share and the emptiest less, by more than rebalanceSlack, it begins a
// move from the one to the other of at most rebuild_batch_chunks chunks (fsm.BeginRebuild with
// From and To; the target joins the layout if it was added after it). The SDSs copy as for a
// rebuild, throttled by rebuild_mbps; the move completes like a rebuild batch. One move per pool
// at a time; the next round looks again, so a returned or added SDS fills up in steps.

// rebalanceSlack: imbalances below max(rebalanceMinChunks, share/rebalanceFraction) chunks are
// left alone, so placement noise does not keep chunks moving.
const (
	rebalanceMinChunks = 16
	rebalanceFraction  = 10
)

// move is one planned move.
type move struct {
	volumeID, from, to, ordered, chunks int64
	memo                                balanceMemo // the pool's volumes found balanced on the way
}

// balanceMemo remembers, per volume, a digest of what the last look found balanced: the
// candidate SDSs and the volume's whole layout. Judging balance replays every chunk's placement,
// which on a large volume is the leader's biggest cost at rest, and rounds come every
// rebuild_interval; an unchanged digest gives the same verdict, so the replay is skipped.
type balanceMemo map[int64][sha256.Size]byte

// balanceDigest is the memo's key for one volume.
func balanceDigest(cands []byte, l *layout.Layout) [sha256.Size]byte {
	h := sha256.New()
	h.Write(cands)
	_ = json.NewEncoder(h).Encode(l) // a Layout always encodes; maps are written in key order
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// rebalance begins at most one move in the pool and tells whether it proposed one.
func (p *rebuildPlanner) rebalance(ctx context.Context, poolID int64) (bool, error) {
	mv, ok, err := planMove(p.store, poolID, p.cfg.BatchChunks, p.balanced[poolID])
	if err == nil {
		p.balanced[poolID] = mv.memo
	}
	if err != nil || !ok {
		return false, err
	}
	_, err = p.store.Propose(ctx, "", &fsm.BeginRebuild{VolumeID: mv.volumeID, Ordered: mv.ordered, From: mv.from, To: mv.to})
	if isKind(err, fsm.KindConflict) || isKind(err, fsm.KindPrecondition) || isKind(err, fsm.KindInvalid) {
		return true, nil // the pool changed since the scan: next round
	}
	if err == nil {
		p.log.Info("rebalance move begun", "volume", mv.volumeID, "from_sds", mv.from, "to_sds", mv.to, "chunks", mv.chunks)
	}
	return err == nil, err
}

// planMove finds the first volume of the pool whose copies are unevenly spread and the move
// that evens it out most.
// Volumes whose digest is in seen are not judged again; the move (planned or not) carries the
// memo for the next round.
func planMove(store rebuildStore, poolID, batch int64, seen balanceMemo) (move, bool, error) {
	type candidate struct {
		id, weight, faultSet int64
	}
	var cands []candidate
	var layouts []layout.Layout
	err := store.Read(func(r *fsm.Reader) error {
		pool, err := r.Pool(poolID)
		if err != nil {
			return err
		}
		sdss, err := r.SDSs()
		if err != nil {
			return err
		}
		for _, s := range sdss {
			if s.ProtectionDomainID == pool.PDID && s.State == fsm.SDSUp {
				c := candidate{id: s.ID, weight: max(s.TotalCapacityGB, 1)}
				if s.FaultSetID != nil {
					c.faultSet = *s.FaultSetID
				}
				cands = append(cands, c)
			}
		}
		layouts, err = r.PoolLayouts(poolID)
		return err
	})
	if err != nil || len(cands) < 3 { // with two SDSs every chunk is on both
		return move{}, false, err
	}
	var weights int64
	var key []byte // the candidates, part of every volume's digest
	for _, c := range cands {
		weights += c.weight
		key = binary.AppendVarint(binary.AppendVarint(binary.AppendVarint(key, c.id), c.weight), c.faultSet)
	}
	memo := balanceMemo{}
	for i := range layouts {
		l := &layouts[i]
		d := balanceDigest(key, l)
		if seen[l.VolumeID] == d {
			memo[l.VolumeID] = d
			continue
		}
		counts := map[int64]int64{}
		for c := range l.Chunks() {
			ids, pending := l.ReplicaSet(c)
			if pending || len(ids) != layout.Copies {
				return move{memo: memo}, false, nil // not fully protected, or already moving: not now
			}
			for _, id := range ids {
				counts[id]++
			}
		}
		// Share of each candidate, and the most over and most under it.
		total := layout.Copies * l.Chunks()
		var from, to candidate
		var over, under int64
		for _, c := range cands {
			share := total * c.weight / weights
			if d := counts[c.id] - share; d > over {
				from, over = c, d
			}
			if d := share - counts[c.id]; d > under {
				to, under = c, d
			}
		}
		share := total / int64(len(cands))
		slack := max(rebalanceMinChunks, share/rebalanceFraction)
		if from.id == 0 || to.id == 0 || over < slack || under < slack {
			memo[l.VolumeID] = d
			continue
		}
		want := min(over, under, batch)
		// Which chunks would move: replay with the move appended (the target joined if new).
		h := *l
		h.Rebuilds = append(slices.Clone(l.Rebuilds), layout.Rebuild{Epoch: l.Epoch + 1, Ordered: l.Chunks(), From: from.id, To: to.id})
		if _, member := l.Member(to.id); !member {
			h.Members = append(slices.Clone(l.Members), layout.Member{SDSID: to.id, Weight: to.weight, FaultSet: to.faultSet, Joined: l.Epoch + 1})
		}
		var n, ordered int64
		for c := range l.Chunks() {
			if _, pending := h.ReplicaSet(c); pending {
				n++
				ordered = c + 1
				if n == want {
					break
				}
			}
		}
		if n == 0 {
			memo[l.VolumeID] = d
			continue
		}
		return move{volumeID: l.VolumeID, from: from.id, to: to.id, ordered: ordered, chunks: n, memo: memo}, true, nil
	}
	return move{memo: memo}, false, nil
}
