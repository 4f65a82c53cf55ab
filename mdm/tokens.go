package mdm

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/token"
)

// The token authority: the leader signs IO tokens for mapped volumes with the newest key the
// FSM holds (it generated that key itself at its first leadership), commits SDSs' ACK batches
// to the ledger, and pins volume layouts.

// ErrForbidden refuses a token: the volume is not mapped to that SDC, or not for writing.
var ErrForbidden = errors.New("forbidden")

// DefaultTokenTTL is how long an IO token lives; SDCs renew well before.
const DefaultTokenTTL = 60 * time.Second

// ensureTokenKey commits a first signing key if the cluster has none.
func (n *Node) ensureTokenKey(ctx context.Context) error {
	var keys []fsm.TokenKey
	if err := n.store.Read(func(r *fsm.Reader) (err error) { keys, err = r.TokenKeys(); return }); err != nil {
		return err
	}
	if len(keys) > 0 {
		return nil
	}
	_, err := n.RotateTokenKey(ctx)
	return err
}

// RotateTokenKey commits a new signing key; tokens signed with the older keys stay valid until
// they expire (the FSM keeps the newest three).
func (n *Node) RotateTokenKey(ctx context.Context) (uint32, error) {
	var keys []fsm.TokenKey
	if err := n.store.Read(func(r *fsm.Reader) (err error) { keys, err = r.TokenKeys(); return }); err != nil {
		return 0, err
	}
	id := uint32(1)
	if len(keys) > 0 {
		id = keys[len(keys)-1].ID + 1
	}
	if _, err := n.Propose(ctx, "", &fsm.AddTokenKey{ID: id, Key: token.NewKey()}); err != nil {
		return 0, err
	}
	n.log.Info("IO token signing key committed", "key_id", id)
	return id, nil
}

// IssueToken signs a token for an SDC's mapped volume, after a linearizable read of the mapping.
func (n *Node) IssueToken(ctx context.Context, req api.TokenRequest) (api.TokenResponse, error) {
	if err := n.ReadBarrier(ctx); err != nil {
		return api.TokenResponse{}, err
	}
	mode := req.AccessMode
	if mode == "" {
		mode = fsm.ReadWrite
	}
	if mode != fsm.ReadWrite && mode != fsm.ReadOnly {
		return api.TokenResponse{}, &fsm.Error{Kind: fsm.KindInvalid, Message: fmt.Sprintf("access_mode %q must be readWrite or readOnly", mode)}
	}
	var v fsm.Volume
	var keys []fsm.TokenKey
	err := n.store.Read(func(r *fsm.Reader) (err error) {
		if v, err = r.Volume(req.VolumeID); err != nil {
			return err
		}
		if _, err = r.SDC(req.SDCID); err != nil {
			return err
		}
		keys, err = r.TokenKeys()
		return err
	})
	if err != nil {
		return api.TokenResponse{}, err
	}
	var m *fsm.Mapping
	for i := range v.Mappings {
		if v.Mappings[i].SDCID == req.SDCID {
			m = &v.Mappings[i]
		}
	}
	if m == nil {
		return api.TokenResponse{}, fmt.Errorf("%w: volume %q is not mapped to SDC %d", ErrForbidden, v.Name, req.SDCID)
	}
	if mode == fsm.ReadWrite && m.AccessMode == fsm.ReadOnly {
		return api.TokenResponse{}, fmt.Errorf("%w: volume %q is mapped readOnly to SDC %d", ErrForbidden, v.Name, req.SDCID)
	}
	if len(keys) == 0 {
		return api.TokenResponse{}, fmt.Errorf("%w: no signing key yet", ErrNotLeader)
	}
	key := keys[len(keys)-1]
	var id [8]byte
	rand.Read(id[:])
	c := token.Claims{
		TokenID:       binary.BigEndian.Uint64(id[:]),
		VolumeID:      v.ID,
		SDCID:         req.SDCID,
		Mode:          token.ReadWrite,
		MapGeneration: v.MapGeneration,
		ExpiresAt:     time.Now().Add(n.tokenTTL()).UnixMilli(),
		KeyID:         key.ID,
	}
	if mode == fsm.ReadOnly {
		c.Mode = token.ReadOnly
	}
	t := token.Sign(c, key.Key)
	return api.TokenResponse{
		Token: t.String(), TokenID: hex.EncodeToString(id[:]), VolumeID: v.ID, SDCID: req.SDCID, AccessMode: mode,
		MapGeneration: c.MapGeneration, ExpiresAt: c.ExpiresAt, KeyID: c.KeyID,
	}, nil
}

func (n *Node) tokenTTL() time.Duration {
	if d, err := time.ParseDuration(n.cfg.TokenTTL); err == nil && d > 0 {
		return d
	}
	return DefaultTokenTTL
}

// IOState is what SDSs verify tokens with.
func (n *Node) IOState() (*api.IOState, error) {
	st := &api.IOState{Generations: map[string]int64{}}
	err := n.store.Read(func(r *fsm.Reader) error {
		v, err := r.IOVersion()
		if err != nil {
			return err
		}
		st.Version = v
		keys, err := r.TokenKeys()
		if err != nil {
			return err
		}
		for _, k := range keys {
			st.Keys = append(st.Keys, api.TokenKey{ID: k.ID, Key: k.Key})
		}
		gens, err := r.Generations()
		if err != nil {
			return err
		}
		for id, g := range gens {
			st.Generations[strconv.FormatInt(id, 10)] = g
		}
		st.LayoutEpochs, err = r.LayoutEpochs()
		return err
	})
	return st, err
}

// Ledger sums the token ledger for a filter.
func (n *Node) Ledger(f fsm.LedgerFilter) (api.Ledger, error) {
	var l api.Ledger
	err := n.store.Read(func(r *fsm.Reader) (err error) { l.Rows, err = r.Ledger(f); return })
	tokens := map[string]bool{}
	for _, row := range l.Rows {
		tokens[row.TokenID] = true
		l.Totals.ReadOps = fsm.AddCount(l.Totals.ReadOps, row.ReadOps, math.MaxInt64)
		l.Totals.WriteOps = fsm.AddCount(l.Totals.WriteOps, row.WriteOps, math.MaxInt64)
		l.Totals.ReadBytes = fsm.AddCount(l.Totals.ReadBytes, row.ReadBytes, math.MaxInt64)
		l.Totals.WriteBytes = fsm.AddCount(l.Totals.WriteBytes, row.WriteBytes, math.MaxInt64)
	}
	l.Totals.Tokens = len(tokens)
	return l, err
}

// VolumeLayout returns a volume's layout, pinning one first (the up SDSs of its protection
// domain, weighted by capacity) if it has none.
func (n *Node) VolumeLayout(ctx context.Context, volumeID int64) (layout.Layout, error) {
	if err := n.ReadBarrier(ctx); err != nil {
		return layout.Layout{}, err
	}
	var l layout.Layout
	var have bool
	var members []layout.Member
	err := n.store.Read(func(r *fsm.Reader) (err error) {
		if l, have, err = r.Layout(volumeID); err != nil || have {
			return err
		}
		v, err := r.Volume(volumeID)
		if err != nil {
			return err
		}
		p, err := r.Pool(v.PoolID)
		if err != nil {
			return err
		}
		sdss, err := r.SDSs()
		for _, s := range sdss {
			if s.ProtectionDomainID == p.PDID && s.State == fsm.SDSUp {
				m := layout.Member{SDSID: s.ID, Weight: s.TotalCapacityGB}
				if s.FaultSetID != nil {
					m.FaultSet = *s.FaultSetID
				}
				members = append(members, m)
			}
		}
		return err
	})
	if err != nil || have {
		return l, err
	}
	v, err := n.Propose(ctx, "", &fsm.SetLayout{VolumeID: volumeID, Members: members})
	if err != nil {
		return layout.Layout{}, err
	}
	if got, ok := v.(layout.Layout); ok {
		return got, nil
	}
	err = n.store.Read(func(r *fsm.Reader) (err error) { l, _, err = r.Layout(volumeID); return })
	return l, err
}
