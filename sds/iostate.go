package sds

import (
	"strconv"
	"sync"

	"github.com/hashicorp/go-hclog"

	"pflex/internal/api"
	"pflex/internal/token"
)

// tokenState holds what the SDS verifies IO tokens with, kept in step with the IOState the MDM
// leader sends (registration answer, heartbeat answers when it changed).
type tokenState struct {
	keys     token.Keyring
	verifier *token.Verifier
	log      hclog.Logger

	mu      sync.Mutex
	held    map[uint32]bool // key ids in keys
	version int64
	epochs  map[string]int64 // layout epochs of the last IO state
}

func newTokenState(log hclog.Logger) *tokenState {
	t := &tokenState{log: log, held: map[uint32]bool{}}
	t.verifier = token.NewVerifier(&t.keys)
	return t
}

// apply installs st: keys added or replaced, keys no longer listed removed (tokens signed with
// them stop verifying), and every volume's map generation raised (never lowered).
func (t *tokenState) apply(st *api.IOState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	listed := map[uint32]bool{}
	for _, k := range st.Keys {
		if err := t.keys.Add(k.ID, k.Key); err != nil {
			t.log.Error("IO state: unusable token key", "key_id", k.ID, "error", err)
			continue
		}
		listed[k.ID] = true
	}
	for id := range t.held {
		if !listed[id] {
			t.keys.Remove(id)
		}
	}
	t.held = listed
	for vol, gen := range st.Generations {
		id, err := strconv.ParseInt(vol, 10, 64)
		if err != nil {
			t.log.Error("IO state: bad volume id in generations", "volume", vol)
			continue
		}
		t.verifier.SetGeneration(id, gen)
	}
	if st.Version != t.version {
		t.log.Debug("IO state applied", "io_version", st.Version, "keys", len(listed), "volumes", len(st.Generations))
	}
	t.version = st.Version
	t.epochs = st.LayoutEpochs
}

// layoutEpochs is the layout epochs of the last IO state applied (nil: none yet).
func (t *tokenState) layoutEpochs() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epochs
}

// newestKey is the highest key id held: the one the leader signs with.
func (t *tokenState) newestKey() (uint32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var best uint32
	for id := range t.held {
		best = max(best, id)
	}
	return best, best != 0
}

// status is what /status reports about the IO state.
func (t *tokenState) status() (version int64, keys int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.version, len(t.held)
}
