package cli

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"strconv"

	"pflex/internal/api"
	"pflex/internal/layout"
)

// The data path as the MDM sees it: a volume's placement and the IO token ledger.

func ioVerbs() []verb {
	return []verb{
		{path: "vol layout", synopsis: "VOL [-chunks N]", summary: "show a volume's placement: SDSs, epoch, the replicas of its first chunks",
			minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				chunks := fs.Int64("chunks", 8, "how many chunks to list")
				return func(ctx context.Context, s *session, args []string) error {
					v, err := s.resolve(ctx, kindVol, args[0])
					if err != nil {
						return err
					}
					raw, err := s.call(ctx, "GET", fmt.Sprintf("/vol/%d/layout", v.id), nil, nil)
					if err != nil {
						return err
					}
					return emit(s, raw, func(l layout.Layout) error {
						fmt.Fprintf(s.stdout, "volume %d: %d chunks of %d MiB, epoch %d, thick %v\n",
							l.VolumeID, l.Chunks(), l.ChunkSize>>20, l.Epoch, l.Thick)
						t := newTable(s.stdout, "SDS", "WEIGHT", "FAULT SET", "DATA ADDR")
						for _, m := range l.Members {
							t.row(strconv.FormatInt(m.SDSID, 10), strconv.FormatInt(m.Weight, 10), strconv.FormatInt(m.FaultSet, 10), dash(m.Addr))
						}
						t.flush()
						t = newTable(s.stdout, "CHUNK", "PRIMARY", "SECONDARY", "EPOCH")
						for c := int64(0); c < min(*chunks, l.Chunks()); c++ {
							r := l.Replicas(c)
							sec := "-"
							if len(r) > 1 {
								sec = strconv.FormatInt(r[1], 10)
							}
							t.row(strconv.FormatInt(c, 10), strconv.FormatInt(r[0], 10), sec, strconv.FormatInt(l.ChunkEpoch(c), 10))
						}
						t.flush()
						return nil
					})
				}
			}},
		{path: "token ledger", synopsis: "[-vol VOL] [-sdc SDC] [-sds ID]", summary: "what each IO token carried through each SDS",
			define: func(fs *flag.FlagSet) runFunc {
				vol := fs.String("vol", "", "volume (id or name)")
				sdc := fs.String("sdc", "", "SDC (id or name)")
				sds := fs.Int64("sds", 0, "SDS id")
				return func(ctx context.Context, s *session, _ []string) error {
					q := url.Values{}
					if *vol != "" {
						v, err := s.resolve(ctx, kindVol, *vol)
						if err != nil {
							return err
						}
						q.Set("volume_id", strconv.FormatInt(v.id, 10))
					}
					if *sdc != "" {
						c, err := s.resolve(ctx, kindSDC, *sdc)
						if err != nil {
							return err
						}
						q.Set("sdc_id", strconv.FormatInt(c.id, 10))
					}
					if *sds > 0 {
						q.Set("sds_id", strconv.FormatInt(*sds, 10))
					}
					raw, err := s.call(ctx, "GET", "/token/ledger", q, nil)
					if err != nil {
						return err
					}
					return emit(s, raw, func(l api.Ledger) error {
						t := newTable(s.stdout, "TOKEN", "VOLUME", "SDC", "SDS", "READ OPS", "READ BYTES", "WRITE OPS", "WRITE BYTES")
						for _, r := range l.Rows {
							t.row(r.TokenID, strconv.FormatInt(r.VolumeID, 10), strconv.FormatInt(r.SDCID, 10), strconv.FormatInt(r.SDSID, 10),
								strconv.FormatInt(r.ReadOps, 10), strconv.FormatInt(r.ReadBytes, 10), strconv.FormatInt(r.WriteOps, 10), strconv.FormatInt(r.WriteBytes, 10))
						}
						t.flush()
						fmt.Fprintf(s.stdout, "total: %d tokens, %d reads (%d bytes), %d writes (%d bytes, every replica counted)\n",
							l.Totals.Tokens, l.Totals.ReadOps, l.Totals.ReadBytes, l.Totals.WriteOps, l.Totals.WriteBytes)
						return nil
					})
				}
			}},
		{path: "token rotate", summary: "commit a new IO token signing key", maxArgs: 0,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, _ []string) error {
					raw, err := s.call(ctx, "POST", "/token/rotate", nil, nil)
					if err != nil {
						return err
					}
					return emit(s, raw, func(m map[string]uint32) error {
						fmt.Fprintf(s.stdout, "new signing key %d\n", m["key_id"])
						return nil
					})
				}
			}},
	}
}
