package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"strings"

	"pflex/fsm"
	"pflex/internal/api"
)

// Volumes, their SDC mappings and their labels.

func volumeVerbs() []verb {
	return []verb{
		{path: "vol create", synopsis: "NAME -size-gb N -pool POOL [-thick]", summary: "create a volume (thin unless -thick)",
			minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				size := fs.Int64("size-gb", 0, "size in GB")
				pool := fs.String("pool", "", "storage pool (id or name)")
				thick := fs.Bool("thick", false, "reserve the whole size now")
				return func(ctx context.Context, s *session, args []string) error {
					if err := positive("", "size-gb", *size); err != nil {
						return err
					}
					if *pool == "" {
						return usagef("", "-pool is required")
					}
					p, err := s.resolve(ctx, kindPool, *pool)
					if err != nil {
						return err
					}
					prov := fsm.Thin
					if *thick {
						prov = fsm.Thick
					}
					raw, err := s.call(ctx, "POST", "/vol/create", nil, map[string]any{
						"name": args[0], "size_gb": *size, "provisioning": prov, "pool_id": p.id,
					})
					if err != nil {
						return err
					}
					return created(s, kindVol, raw)
				}
			}},
		listVerb("vol list", kindVol, renderVolumes),
		showVerb("vol show", "ID|NAME", kindVol, renderVolume),
		deleteVerb("vol delete", "ID|NAME", kindVol),

		{path: "vol map", synopsis: "VOL SDC [-readonly] [-iops N] [-mbps N]", summary: "map a volume to an SDC",
			minArgs: 2, maxArgs: 2,
			define: func(fs *flag.FlagSet) runFunc {
				readOnly := fs.Bool("readonly", false, "map read-only")
				iops := fs.Int64("iops", 0, "IOPS limit (0: none)")
				mbps := fs.Int64("mbps", 0, "bandwidth limit in MiB/s (0: none)")
				return func(ctx context.Context, s *session, args []string) error {
					if *iops < 0 || *mbps < 0 {
						return usagef("", "-iops and -mbps must not be negative")
					}
					vol, sdc, err := s.resolveVolSDC(ctx, args[0], args[1])
					if err != nil {
						return err
					}
					mode := fsm.ReadWrite
					if *readOnly {
						mode = fsm.ReadOnly
					}
					raw, err := s.call(ctx, "POST", "/vol/map", nil, map[string]any{
						"volume_id": vol.id, "sdc_id": sdc.id, "access_mode": mode,
						"iops_limit": *iops, "bandwidth_limit_mbps": *mbps,
					})
					if err != nil {
						return err
					}
					return emit(s, raw, func(json.RawMessage) error {
						fmt.Fprintf(s.stdout, "mapped volume %s to SDC %s (%s)\n", vol, sdc, mode)
						return nil
					})
				}
			}},
		{path: "vol unmap", synopsis: "VOL SDC", summary: "unmap a volume from an SDC", minArgs: 2, maxArgs: 2,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					vol, sdc, err := s.resolveVolSDC(ctx, args[0], args[1])
					if err != nil {
						return err
					}
					raw, err := s.call(ctx, "POST", "/vol/unmap", nil, map[string]any{"volume_id": vol.id, "sdc_id": sdc.id})
					if err != nil {
						return err
					}
					return emit(s, raw, func(json.RawMessage) error {
						fmt.Fprintf(s.stdout, "unmapped volume %s from SDC %s\n", vol, sdc)
						return nil
					})
				}
			}},
		{path: "vol limits", synopsis: "VOL SDC [-iops N] [-mbps N]", summary: "change a mapping's IOPS and bandwidth limits in place",
			minArgs: 2, maxArgs: 2,
			define: func(fs *flag.FlagSet) runFunc {
				iops := fs.Int64("iops", 0, "IOPS limit (0: none); left as is when not given")
				mbps := fs.Int64("mbps", 0, "bandwidth limit in MiB/s (0: none); left as is when not given")
				return func(ctx context.Context, s *session, args []string) error {
					body := map[string]any{}
					fs.Visit(func(f *flag.Flag) {
						switch f.Name {
						case "iops":
							body["iops_limit"] = *iops
						case "mbps":
							body["bandwidth_limit_mbps"] = *mbps
						}
					})
					if len(body) == 0 {
						return usagef("", "give -iops, -mbps or both")
					}
					if *iops < 0 || *mbps < 0 {
						return usagef("", "-iops and -mbps must not be negative")
					}
					vol, sdc, err := s.resolveVolSDC(ctx, args[0], args[1])
					if err != nil {
						return err
					}
					body["volume_id"], body["sdc_id"] = vol.id, sdc.id
					raw, err := s.call(ctx, "POST", "/vol/limits", nil, body)
					if err != nil {
						return err
					}
					return emit(s, raw, func(v fsm.Volume) error {
						for _, m := range v.Mappings {
							if m.SDCID == sdc.id {
								fmt.Fprintf(s.stdout, "limits of volume %s on SDC %s: IOPS %s, bandwidth %s\n",
									vol, sdc, limit(m.IOPSLimit), limitMBps(m.BandwidthLimitMBps))
							}
						}
						return nil
					})
				}
			}},
		{path: "vol extend", synopsis: "VOL -size-gb N", summary: "grow a volume to a new size", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				size := fs.Int64("size-gb", 0, "new size in GB")
				return func(ctx context.Context, s *session, args []string) error {
					if err := positive("", "size-gb", *size); err != nil {
						return err
					}
					vol, err := s.resolve(ctx, kindVol, args[0])
					if err != nil {
						return err
					}
					raw, err := s.call(ctx, "POST", "/vol/extend", nil, map[string]any{"volume_id": vol.id, "size_gb": *size})
					if err != nil {
						return err
					}
					return emit(s, raw, func(json.RawMessage) error {
						fmt.Fprintf(s.stdout, "volume %s is now %d GB\n", vol, *size)
						return nil
					})
				}
			}},
		{path: "vol label get", synopsis: "VOL KEY", summary: "read a volume label", minArgs: 2, maxArgs: 2,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					vol, err := s.resolve(ctx, kindVol, args[0])
					if err != nil {
						return err
					}
					raw, err := s.call(ctx, "GET", labelPath(vol, args[1]), nil, nil)
					if err != nil {
						return err
					}
					return emit(s, raw, func(l fsm.Label) error { renderLabel(s, l); return nil })
				}
			}},
		{path: "vol label set", synopsis: "VOL KEY VALUE [-expect OLD]",
			summary: "write a volume label; with -expect only if its value is OLD (\"\" = absent)",
			minArgs: 3, maxArgs: 3,
			define: func(fs *flag.FlagSet) runFunc {
				var expect optionalString
				fs.Var(&expect, "expect", "compare-and-set: current value must be this")
				return func(ctx context.Context, s *session, args []string) error {
					vol, err := s.resolve(ctx, kindVol, args[0])
					if err != nil {
						return err
					}
					req := api.LabelRequest{Value: args[2]}
					if expect.set {
						req.Expect = &expect.value
					}
					raw, err := s.call(ctx, "PUT", labelPath(vol, args[1]), nil, req)
					if err != nil {
						return err
					}
					return emit(s, raw, func(l fsm.Label) error { renderLabel(s, l); return nil })
				}
			}},
	}
}

func labelPath(vol ref, key string) string {
	return vol.path(kindVol) + "/labels/" + url.PathEscape(key)
}

func (s *session) resolveVolSDC(ctx context.Context, volArg, sdcArg string) (ref, ref, error) {
	vol, err := s.resolve(ctx, kindVol, volArg)
	if err != nil {
		return ref{}, ref{}, err
	}
	sdc, err := s.resolve(ctx, kindSDC, sdcArg)
	if err != nil {
		return ref{}, ref{}, err
	}
	return vol, sdc, nil
}

// optionalString is a string flag that knows whether it was given (-expect "" differs from
// no -expect).
type optionalString struct {
	value string
	set   bool
}

func (o *optionalString) String() string     { return o.value }
func (o *optionalString) Set(v string) error { o.value, o.set = v, true; return nil }

func renderVolumes(ctx context.Context, s *session, items []fsm.Volume) {
	t := newTable(s.stdout, "ID", "NAME", "SIZE_GB", "PROVISIONING", "POOL", "MAPPED_TO")
	for _, v := range items {
		var sdcs []string
		for _, m := range v.Mappings {
			name := s.nameOf(ctx, kindSDC, m.SDCID)
			if m.AccessMode == fsm.ReadOnly {
				name += "(ro)"
			}
			sdcs = append(sdcs, name)
		}
		t.row(v.ID, v.Name, v.SizeGB, v.Provisioning, s.nameOf(ctx, kindPool, v.PoolID), strings.Join(sdcs, ","))
	}
	t.flush()
}

func renderVolume(ctx context.Context, s *session, v fsm.Volume) {
	newBlock(s.stdout).add("id", v.ID).add("name", v.Name).
		add("size", fmt.Sprintf("%d GB", v.SizeGB)).add("provisioning", v.Provisioning).
		add("pool", s.nameOf(ctx, kindPool, v.PoolID)).
		add("map generation", v.MapGeneration).
		add("created", fmtTime(v.CreatedAt)).
		add("mappings", len(v.Mappings)).print()
	if len(v.Mappings) == 0 {
		return
	}
	fmt.Fprintln(s.stdout)
	t := newTable(s.stdout, "  SDC", "ACCESS", "IOPS_LIMIT", "MBPS_LIMIT", "GENERATION", "MAPPED")
	for _, m := range v.Mappings {
		t.row("  "+s.nameOf(ctx, kindSDC, m.SDCID), m.AccessMode, limit(m.IOPSLimit),
			limit(m.BandwidthLimitMBps), m.Generation, fmtTime(m.CreatedAt))
	}
	t.flush()
}

func limitMBps(n int64) string {
	if n <= 0 {
		return "none"
	}
	return fmt.Sprintf("%d MiB/s", n)
}

func limit(n int64) string {
	if n <= 0 {
		return "none"
	}
	return fmt.Sprint(n)
}

func renderLabel(s *session, l fsm.Label) {
	value := l.Value
	if value == "" {
		value = `""`
	}
	newBlock(s.stdout).add("key", l.Key).add("value", value).add("version", l.Version).
		add("updated", fmtTime(l.UpdatedAt)).print()
}
