package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"pflex/internal/api"
)

// The MDM cluster itself: membership, leadership, backup and restore.

func clusterVerbs() []verb {
	return []verb{
		{path: "cluster status", summary: "the answering MDM's view of the Raft cluster", maxArgs: 0,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, _ []string) error {
					raw, err := s.call(ctx, "GET", "/cluster/status", nil, nil)
					if err != nil {
						return err
					}
					return emit(s, raw, func(st api.ClusterStatus) error {
						renderClusterStatus(s, st)
						return nil
					})
				}
			}},
		{path: "cluster peers", summary: "list the MDM replicas in the Raft configuration", maxArgs: 0,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, _ []string) error {
					raw, err := s.call(ctx, "GET", "/cluster/peers", nil, nil)
					if err != nil {
						return err
					}
					return emit(s, raw, func(peers []api.Peer) error {
						renderPeers(s, peers, s.api.LastLeader())
						return nil
					})
				}
			}},
		{path: "cluster members", summary: "list every node: capabilities, gossip state, committed state, last heartbeat", maxArgs: 0,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, _ []string) error {
					raw, err := s.call(ctx, "GET", "/cluster/members", nil, nil)
					if err != nil {
						return err
					}
					return emit(s, raw, func(members []api.Member) error {
						renderMembers(s, members)
						return nil
					})
				}
			}},
		{path: "cluster join", synopsis: "ID RAFT_ADDR API_ADDR [-nonvoter]", summary: "add an MDM to the Raft configuration",
			minArgs: 3, maxArgs: 3,
			define: func(fs *flag.FlagSet) runFunc {
				nonVoter := fs.Bool("nonvoter", false, "add as a non-voting replica")
				return func(ctx context.Context, s *session, args []string) error {
					voter := !*nonVoter
					raw, err := s.call(ctx, "POST", "/cluster/join", nil, api.JoinRequest{
						NodeID: args[0], RaftAddr: args[1], APIAddr: args[2], Voter: &voter,
					})
					if err != nil {
						return err
					}
					return emit(s, raw, func(json.RawMessage) error {
						role := "voter"
						if !voter {
							role = "non-voter"
						}
						fmt.Fprintf(s.stdout, "joined %s (raft %s, api %s) as a %s\n", args[0], args[1], args[2], role)
						return nil
					})
				}
			}},
		{path: "cluster remove", synopsis: "ID", summary: "remove an MDM from the Raft configuration", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					raw, err := s.call(ctx, "POST", "/cluster/remove", nil, api.RemoveRequest{NodeID: args[0]})
					if err != nil {
						return err
					}
					return emit(s, raw, func(json.RawMessage) error {
						fmt.Fprintf(s.stdout, "removed %s\n", args[0])
						return nil
					})
				}
			}},
		{path: "cluster transfer-leadership", synopsis: "[ID]",
			summary: "hand leadership to ID (or the most up-to-date follower)", maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					var req api.TransferRequest
					if len(args) == 1 {
						req.NodeID = args[0]
					}
					raw, err := s.call(ctx, "POST", "/cluster/transfer-leadership", nil, req)
					if err != nil {
						return err
					}
					return emit(s, raw, func(r api.TransferResponse) error {
						if r.LeaderID == "" {
							// The old leader answered before anyone won the new term.
							r = s.awaitLeader(ctx)
						}
						if r.LeaderID == "" {
							fmt.Fprintln(s.stdout, "leadership transferred; no new leader is known yet (see pflex status)")
							return nil
						}
						fmt.Fprintf(s.stdout, "leader is now %s (api %s)\n", r.LeaderID, r.LeaderAPI)
						return nil
					})
				}
			}},
		{path: "cluster snapshot save", synopsis: "FILE", summary: "download a backup of the MDM state", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					return s.snapshotSave(ctx, args[0])
				}
			}},
		{path: "cluster snapshot restore", synopsis: "FILE", summary: "replace the MDM state with a backup", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					return s.snapshotRestore(ctx, args[0])
				}
			}},
	}
}

// awaitLeader polls the cluster status until some replica names a leader, for a few seconds
// at most.
func (s *session) awaitLeader(ctx context.Context) api.TransferResponse {
	deadline := time.Now().Add(min(s.g.timeout, 5*time.Second))
	for time.Now().Before(deadline) {
		var st api.ClusterStatus
		if err := s.api.Get(ctx, "/cluster/status", nil, &st); err == nil && st.LeaderID != "" {
			return api.TransferResponse{LeaderID: st.LeaderID, LeaderAPI: st.LeaderAPI}
		}
		select {
		case <-ctx.Done():
			return api.TransferResponse{}
		case <-time.After(100 * time.Millisecond):
		}
	}
	return api.TransferResponse{}
}

func renderClusterStatus(s *session, st api.ClusterStatus) {
	leader := st.LeaderID
	if st.LeaderAPI != "" {
		leader += " (" + st.LeaderAPI + ")"
	}
	newBlock(s.stdout).add("node", st.NodeID).add("state", st.State).add("term", st.Term).
		add("leader", leader).add("commit index", st.CommitIndex).add("applied index", st.AppliedIndex).
		add("last log index", st.LastLogIndex).add("fsm index", st.FSMIndex).add("digest", st.Digest).
		add("last contact", st.LastContact).add("version", st.Version).print()
	if len(st.Peers) > 0 {
		fmt.Fprintln(s.stdout)
		renderPeers(s, st.Peers, st.LeaderAPI)
	}
}

func renderPeers(s *session, peers []api.Peer, leaderAPI string) {
	t := newTable(s.stdout, "ID", "RAFT", "API", "SUFFRAGE", "LEADER")
	for _, p := range peers {
		mark := ""
		if leaderAPI != "" && p.APIAddr == leaderAPI {
			mark = "*"
		}
		t.row(p.ID, p.RaftAddr, p.APIAddr, p.Suffrage, mark)
	}
	t.flush()
}

func renderMembers(s *session, members []api.Member) {
	t := newTable(s.stdout, "ID", "CAPABILITIES", "GOSSIP", "STATE", "RAFT", "LAST HEARTBEAT", "API")
	for _, m := range members {
		gossipState := dash(m.GossipState)
		if m.LastContact != "" {
			gossipState += " (" + m.LastContact + ")"
		}
		hb := "-"
		if m.LastHeartbeatMs >= 0 {
			hb = (time.Duration(m.LastHeartbeatMs) * time.Millisecond).String() + " ago"
		}
		raft := dash(m.Raft)
		if m.Leader {
			raft += " (leader)"
		}
		state := dash(m.State)
		if len(m.UnreachablePeers) > 0 {
			state += " (cannot reach " + strings.Join(m.UnreachablePeers, ",") + ")"
		}
		t.row(m.ID, strings.Join(m.Capabilities, ","), gossipState, state, raft, hb, dash(m.APIAddr))
	}
	t.flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// snapshotSave downloads the state database and writes it atomically: a reader of FILE sees
// either the old file or the complete new one, never a partial download.
func (s *session) snapshotSave(ctx context.Context, file string) (err error) {
	resp, err := s.api.DoRaw(ctx, "GET", "/cluster/snapshot", nil, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(tmp, resp.Body)
	if err != nil {
		return fmt.Errorf("snapshot download: %w", err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("snapshot download: got %d of %d bytes", n, resp.ContentLength)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err = os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // make the rename durable; best effort
		d.Close()
	}
	index, _ := strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
	if s.json {
		return encodeJSON(s.stdout, map[string]any{"file": file, "bytes": n, "index": index})
	}
	fmt.Fprintf(s.stdout, "saved snapshot to %s: %d bytes, index %d\n", file, n, index)
	return nil
}

func (s *session) snapshotRestore(ctx context.Context, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	defer f.Close()
	resp, err := s.api.DoRaw(ctx, "POST", "/cluster/restore", nil, f, "application/octet-stream")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	return emit(s, raw, func(r api.RestoreResponse) error {
		fmt.Fprintf(s.stdout, "restored %s: applied index %d, digest %s\n", file, r.AppliedIndex, short(r.Digest, 12))
		return nil
	})
}
