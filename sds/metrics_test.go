package sds

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"pflex/internal/promtext"
	"pflex/internal/token"
	"pflex/internal/wire"
)

// GET /metrics has the data path's counters in Prometheus's format.
func TestMetrics(t *testing.T) {
	c := startCluster(t, 2)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	conn := c.dial(t, p, &tok)
	for i := 0; i < 3; i++ {
		if _, st := do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: int64(i) * 512, Epoch: 1, Data: fill(512, byte(i))}); st != wire.StatusOK {
			t.Fatalf("write: %v", st)
		}
	}
	for id, want := range map[int64][]string{
		p: {`pflex_sds_writes_total{node="%s"} 3`, `pflex_registered{node="%s",role="sds"} 1`},
		s: {`pflex_sds_replica_writes_total{node="%s"} 3`, `pflex_sds_writes_total{node="%s"} 0`},
	} {
		resp, err := http.Get("http://" + c.sdss[id].APIAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text := string(b)
		if err := promtext.Validate(text); err != nil || resp.Header.Get("Content-Type") != promtext.ContentType {
			t.Fatalf("SDS %d /metrics (%s): %v\n%s", id, resp.Header.Get("Content-Type"), err, text)
		}
		for _, w := range want {
			name := c.sdss[id].cfg.ID
			w = fmt.Sprintf(w, name)
			if !strings.Contains(text, w+"\n") {
				t.Fatalf("SDS %s /metrics lacks %q:\n%s", name, w, text)
			}
		}
	}
}
