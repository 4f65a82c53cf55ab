package sdc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/leader"
)

// switchingLeader is a leaderSource that adopts whatever leader it is told about.
type switchingLeader struct {
	mu      sync.Mutex
	cur     string
	reports []string
	failed  []string
}

func (s *switchingLeader) Wait(context.Context) (leader.Leader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return leader.Leader{API: s.cur}, nil
}

func (s *switchingLeader) Report(_, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if addr != "" {
		s.cur = addr
		s.reports = append(s.reports, addr)
	}
}

func (s *switchingLeader) Failed(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = append(s.failed, addr)
}

func TestMDMClientFollowsTheLeader(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	// A deposed leader answers 503 naming the new one.
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderLeader, c.mdmAddr())
		mdmError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "not the leader")
	}))
	defer old.Close()
	ls := &switchingLeader{cur: strings.TrimPrefix(old.URL, "http://")}
	m := newMDMClient(ls, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	vols, err := m.Volumes(ctx, testSDCID)
	if err != nil || len(vols) != 1 || vols[0].Name != "vol1" {
		t.Fatalf("%+v %v", vols, err)
	}
	if ls.cur != c.mdmAddr() {
		t.Fatalf("leader not followed: %+v", ls)
	}
	// A refusal is final and typed.
	_, err = m.IssueToken(ctx, api.TokenRequest{VolumeID: 1, SDCID: testSDCID + 1, AccessMode: fsm.ReadWrite})
	if !notMapped(err) {
		t.Fatalf("want a 403, got %v", err)
	}
	// A dead MDM is reported failed and retried until the context ends.
	ls.cur = "127.0.0.1:1"
	short, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	if _, err := m.Layout(short, 1); err == nil || len(ls.failed) == 0 {
		t.Fatalf("dead MDM: %v, failed %v", err, ls.failed)
	}
}
