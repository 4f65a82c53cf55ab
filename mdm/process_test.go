package mdm_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/mdm/mdmtest"
)

// writer streams PD creations to the cluster, retrying each one (same request id) through any
// MDM until it is acknowledged, and records what was acknowledged.
type writer struct {
	urls  []string
	mu    sync.Mutex
	acked []string
}

func (w *writer) create(name string, deadline time.Time) bool {
	rid := make([]byte, 8)
	rand.Read(rid)
	body, _ := json.Marshal(map[string]string{"name": name})
	client := &http.Client{Timeout: 3 * time.Second}
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		req, _ := http.NewRequest("POST", w.urls[attempt%len(w.urls)]+"/pd/create", bytes.NewReader(body))
		req.Header.Set(api.HeaderRequestID, hex.EncodeToString(rid))
		resp, err := client.Do(req)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			w.mu.Lock()
			w.acked = append(w.acked, name)
			w.mu.Unlock()
			return true
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			return false // a definite rejection: not acknowledged
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestProcessLeaderKill9LosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	bin := mdmtest.BuildBinary(t)
	p := mdmtest.StartProcesses(t, bin, 3, mdmtest.FastRaft())
	leader := p.WaitLeader(15 * time.Second)

	w := &writer{}
	for i := range p.Cfgs {
		w.urls = append(w.urls, p.URL(i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				w.create(fmt.Sprintf("c%d-%d", c, n), time.Now().Add(10*time.Second))
			}
		}(c)
	}
	time.Sleep(700 * time.Millisecond)
	p.Kill9(leader)
	newLeader := p.WaitLeader(10 * time.Second)
	t.Logf("killed %s, new leader %s", p.Cfgs[leader].NodeID, p.Cfgs[newLeader].NodeID)
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()

	p.Start(leader)
	p.WaitConverged(20 * time.Second)
	if len(w.acked) < 20 {
		t.Fatalf("only %d writes acknowledged; the workload did not run", len(w.acked))
	}
	for i := range p.Cfgs {
		var pds []fsm.ProtectionDomain
		code, _, err := mdmtest.DoJSON(p.URL(i), "", "GET", "/pd/list?stale=1", nil, &pds)
		if err != nil || code != 200 {
			t.Fatalf("%s: list: %d %v", p.Cfgs[i].NodeID, code, err)
		}
		have := map[string]int{}
		for _, pd := range pds {
			have[pd.Name]++
		}
		for _, name := range w.acked {
			if have[name] != 1 {
				t.Fatalf("%s: acknowledged write %q present %d times", p.Cfgs[i].NodeID, name, have[name])
			}
		}
	}
	t.Logf("%d acknowledged writes present exactly once on every replica", len(w.acked))
}
