package cli

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"pflex/internal/api"
)

// rebuildVerbs are "rebuild status|start|cancel": the re-protection of degraded chunks.
func rebuildVerbs() []verb {
	return []verb{
		{path: "rebuild status", synopsis: "[POOL]", summary: "show rebuild progress of a pool (every pool when omitted)", maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					if len(args) == 1 {
						return s.rebuildStatusOne(ctx, args[0])
					}
					return s.rebuildStatusAll(ctx)
				}
			}},
		rebuildPauseVerb("rebuild start", "allow a pool's rebuild again (after a cancel); it resumes at once", false),
		rebuildPauseVerb("rebuild cancel", "cancel a pool's rebuild: the batch being copied is cut short, no new one begins", true),
	}
}

func rebuildPauseVerb(path, summary string, cancel bool) verb {
	return verb{path: path, synopsis: "POOL", summary: summary, minArgs: 1, maxArgs: 1,
		define: func(fs *flag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, args []string) error {
				r, err := s.resolve(ctx, kindPool, args[0])
				if err != nil {
					return err
				}
				action := "start"
				if cancel {
					action = "cancel"
				}
				raw, err := s.call(ctx, "POST", fmt.Sprintf("/rebuild/%s/%d", action, r.id), nil, nil)
				if err != nil {
					return fmt.Errorf("%s the rebuild of pool %s: %w", action, r, err)
				}
				return emit(s, raw, func(v struct {
					CutShort int64 `json:"cut_short"`
				}) error {
					if !cancel {
						fmt.Fprintf(s.stdout, "rebuild of pool %s allowed; it resumes within a planning round\n", r)
						return nil
					}
					fmt.Fprintf(s.stdout, "rebuild of pool %s cancelled", r)
					if v.CutShort > 0 {
						fmt.Fprintf(s.stdout, " (%d volume batches cut short)", v.CutShort)
					}
					fmt.Fprintln(s.stdout)
					return nil
				})
			}
		}}
}

func (s *session) rebuildStatusOne(ctx context.Context, arg string) error {
	r, err := s.resolve(ctx, kindPool, arg)
	if err != nil {
		return err
	}
	raw, err := s.call(ctx, "GET", fmt.Sprintf("/rebuild/status/%d", r.id), nil, nil)
	if err != nil {
		return fmt.Errorf("rebuild status of pool %s: %w", r, err)
	}
	return emit(s, raw, func(st api.RebuildStatus) error {
		renderRebuilds(ctx, s, []api.RebuildStatus{st})
		if len(st.Volumes) > 0 {
			fmt.Fprintln(s.stdout)
			t := newTable(s.stdout, "VOLUME", "CHUNKS", "DEGRADED", "REBUILD EPOCH", "BATCH")
			for _, v := range st.Volumes {
				epoch, batch := "", ""
				if v.Epoch != 0 {
					epoch, batch = fmt.Sprint(v.Epoch), fmt.Sprintf("[%d, %d)", v.Done, v.Ordered)
				}
				t.row(s.nameOf(ctx, kindVol, v.VolumeID), v.Chunks, v.DegradedChunks, epoch, batch)
			}
			t.flush()
		}
		return nil
	})
}

func (s *session) rebuildStatusAll(ctx context.Context) error {
	var pools []struct {
		ID int64 `json:"id"`
	}
	if err := s.api.Get(ctx, "/pool/list", nil, &pools); err != nil {
		return fmt.Errorf("listing pools: %w", err)
	}
	out := []api.RebuildStatus{}
	for _, p := range pools {
		var st api.RebuildStatus
		if err := s.api.Get(ctx, fmt.Sprintf("/rebuild/status/%d", p.ID), nil, &st); err != nil {
			return fmt.Errorf("rebuild status of pool %s: %w", s.nameOf(ctx, kindPool, p.ID), err)
		}
		out = append(out, st)
	}
	if s.json {
		return encodeJSON(s.stdout, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(s.stdout, "no pools")
		return nil
	}
	renderRebuilds(ctx, s, out)
	return nil
}

func renderRebuilds(ctx context.Context, s *session, sts []api.RebuildStatus) {
	t := newTable(s.stdout, "POOL", "STATE", "HEALTH", "DEGRADED", "DONE", "PROGRESS", "MB/S", "ETA", "STARTED")
	for _, st := range sts {
		progress := ""
		if st.ChunksTotal > 0 {
			progress = fmt.Sprintf("%.0f%%", percent(st.ChunksDone, st.ChunksTotal))
		}
		t.row(s.nameOf(ctx, kindPool, st.PoolID), st.State, st.Health, st.DegradedChunks,
			fmt.Sprintf("%d/%d", st.ChunksDone, st.ChunksTotal), progress, fmt.Sprintf("%.1f", st.MBPerSec),
			eta(st.ETASeconds), fmtTime(st.StartedAt))
	}
	t.flush()
}

func percent(done, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return math.Floor(100 * float64(done) / float64(total))
}

// eta shows seconds left, "-" when unknown.
func eta(secs float64) string {
	if secs < 0 {
		return "-"
	}
	return (time.Duration(math.Ceil(secs)) * time.Second).String()
}

// poolHealth is what `pflex status` shows of a pool: GET /pool/{id}/health.
type poolHealth struct {
	PoolID         int64  `json:"pool_id"`
	Name           string `json:"name"`
	Health         string `json:"health"`
	DegradedChunks int64  `json:"degraded_chunks"`
	Rebuild        *struct {
		ChunksDone  int64   `json:"chunks_done"`
		ChunksTotal int64   `json:"chunks_total"`
		Percent     float64 `json:"percent"`
		MBPerSec    float64 `json:"mb_per_s"`
		ETASeconds  float64 `json:"eta_seconds"`
	} `json:"rebuild,omitempty"`
}

// poolHealths asks the leader (directly, its own view) for every pool's health, through the
// endpoint that answered its status (behind docker or NAT its advertised address may not
// resolve from the CLI's host).
func (s *session) poolHealths(ctx context.Context, leader *replicaReport) ([]poolHealth, error) {
	ep := leader.via
	if ep == "" {
		var err error
		if ep, err = api.NormalizeEndpoint(leader.APIAddr); err != nil {
			return nil, err
		}
	}
	c, err := api.NewClient([]string{ep}, api.WithToken(s.g.token), api.WithRetryDeadline(0),
		api.WithoutLeaderFollowing(), api.WithRequestTimeout(min(s.g.timeout, statusTimeout)))
	if err != nil {
		return nil, err
	}
	q := url.Values{"stale": {"1"}} // the leader's own state, without a barrier round
	var pools []struct {
		ID int64 `json:"id"`
	}
	if err := c.Get(ctx, "/pool/list", q, &pools); err != nil {
		return nil, err
	}
	out := []poolHealth{}
	for _, p := range pools {
		var h poolHealth
		if err := c.Get(ctx, fmt.Sprintf("/pool/%d/health", p.ID), q, &h); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// poolsLine is `pflex status`'s pool health line: "pools: pool1 OK, pool2 REBUILDING 37% 210
// MB/s ETA 12s".
func poolsLine(hs []poolHealth, err error) string {
	switch {
	case err != nil:
		return "pools: unknown (" + reason(err) + ")"
	case hs == nil:
		return "pools: unknown (no leader)"
	case len(hs) == 0:
		return "pools: none"
	}
	var parts []string
	for _, h := range hs {
		part := h.Name + " " + h.Health
		if rb := h.Rebuild; rb != nil && h.Health == "REBUILDING" {
			part += fmt.Sprintf(" %.0f%% %.0f MB/s ETA %s", math.Floor(rb.Percent), rb.MBPerSec, eta(rb.ETASeconds))
		} else if h.DegradedChunks > 0 {
			part += fmt.Sprintf(" (%d degraded chunks)", h.DegradedChunks)
		}
		parts = append(parts, part)
	}
	return "pools: " + strings.Join(parts, ", ")
}

// healthJSON is the pools part of `pflex status --json`.
func healthJSON(hs []poolHealth, err error) any {
	if err != nil {
		return map[string]string{"error": reason(err)}
	}
	return hs
}
