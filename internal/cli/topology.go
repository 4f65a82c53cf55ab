package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"pflex/fsm"
)

// Protection domains, fault sets, pools, SDSs and SDCs.

func topologyVerbs() []verb {
	return []verb{
		{path: "pd create", synopsis: "NAME", summary: "create a protection domain", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					raw, err := s.call(ctx, "POST", "/pd/create", nil, map[string]any{"name": args[0]})
					if err != nil {
						return err
					}
					return created(s, kindPD, raw)
				}
			}},
		listVerb("pd list", kindPD, renderPDs),
		showVerb("pd show", "ID|NAME", kindPD, renderPD),
		deleteVerb("pd delete", "ID|NAME", kindPD),

		{path: "faultset create", synopsis: "NAME -pd PD", summary: "create a fault set", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				pd := fs.String("pd", "", "protection domain (id or name)")
				return func(ctx context.Context, s *session, args []string) error {
					if *pd == "" {
						return usagef("", "-pd is required")
					}
					r, err := s.resolve(ctx, kindPD, *pd)
					if err != nil {
						return err
					}
					raw, err := s.call(ctx, "POST", "/faultset/create", nil, map[string]any{"name": args[0], "pd_id": r.id})
					if err != nil {
						return err
					}
					return created(s, kindFS, raw)
				}
			}},
		listVerb("faultset list", kindFS, renderFaultSets),
		showVerb("faultset show", "ID|NAME", kindFS, renderFaultSet),
		deleteVerb("faultset delete", "ID|NAME", kindFS),

		{path: "pool create", synopsis: "NAME -pd PD -capacity-gb N [-chunk-mb 1] [-policy two_copies]",
			summary: "create a storage pool", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				pd := fs.String("pd", "", "protection domain (id or name)")
				capGB := fs.Int64("capacity-gb", 0, "total capacity in GB")
				chunkMB := fs.Int64("chunk-mb", 1, "chunk size in MB")
				policy := fs.String("policy", fsm.TwoCopies, "protection policy")
				return func(ctx context.Context, s *session, args []string) error {
					if *pd == "" {
						return usagef("", "-pd is required")
					}
					if err := positive("", "capacity-gb", *capGB); err != nil {
						return err
					}
					if err := positive("", "chunk-mb", *chunkMB); err != nil {
						return err
					}
					r, err := s.resolve(ctx, kindPD, *pd)
					if err != nil {
						return err
					}
					raw, err := s.call(ctx, "POST", "/pool/create", nil, map[string]any{
						"name": args[0], "pd_id": r.id, "protection_policy": *policy,
						"total_capacity_gb": *capGB, "chunk_size_mb": *chunkMB,
					})
					if err != nil {
						return err
					}
					return created(s, kindPool, raw)
				}
			}},
		listVerb("pool list", kindPool, renderPools),
		showVerb("pool show", "ID|NAME", kindPool, renderPool),
		deleteVerb("pool delete", "ID|NAME", kindPool),
		{path: "pool health", synopsis: "ID|NAME", summary: "show a pool's protection health", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				return func(ctx context.Context, s *session, args []string) error {
					r, err := s.resolve(ctx, kindPool, args[0])
					if err != nil {
						return err
					}
					raw, err := s.call(ctx, "GET", r.path(kindPool)+"/health", nil, nil)
					if err != nil {
						return err
					}
					if s.json {
						return printJSON(s.stdout, raw)
					}
					return printObject(s.stdout, raw)
				}
			}},

		{path: "sds add", synopsis: "NAME -pd PD -capacity-gb N -devices a,b [-faultset FS] [-address host:port]",
			summary: "register an SDS", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				pd := fs.String("pd", "", "protection domain (id or name)")
				capGB := fs.Int64("capacity-gb", 0, "capacity contributed, in GB")
				devices := fs.String("devices", "", "devices, comma separated")
				faultSet := fs.String("faultset", "", "fault set (id or name)")
				address := fs.String("address", "", "SDS address host:port")
				return func(ctx context.Context, s *session, args []string) error {
					if *pd == "" {
						return usagef("", "-pd is required")
					}
					if err := positive("", "capacity-gb", *capGB); err != nil {
						return err
					}
					devs := splitList(*devices)
					if len(devs) == 0 {
						return usagef("", "-devices is required")
					}
					p, err := s.resolve(ctx, kindPD, *pd)
					if err != nil {
						return err
					}
					body := map[string]any{
						"name": args[0], "total_capacity_gb": *capGB, "devices": devs,
						"protection_domain_id": p.id, "address": *address,
					}
					if *faultSet != "" {
						f, err := s.resolve(ctx, kindFS, *faultSet)
						if err != nil {
							return err
						}
						body["fault_set_id"] = f.id
					}
					raw, err := s.call(ctx, "POST", "/sds/add", nil, body)
					if err != nil {
						return err
					}
					return created(s, kindSDS, raw)
				}
			}},
		listVerb("sds list", kindSDS, renderSDSs),
		showVerb("sds show", "ID|NAME", kindSDS, renderSDS),
		deleteVerb("sds delete", "ID|NAME", kindSDS),
		sdsStateVerb("fail", "fail", "mark an SDS failed (drill): its chunks are rebuilt elsewhere"),
		sdsStateVerb("recover", "recover", "bring a failed SDS back"),
		sdsStateVerb("maintenance enter", "maintenance/enter", "planned outage: out of IO without a rebuild, copies kept"),
		sdsStateVerb("maintenance exit", "maintenance/exit", "back from maintenance: re-sync only what was written meanwhile"),

		{path: "sdc add", synopsis: "NAME [-address host:port]", summary: "register an SDC", minArgs: 1, maxArgs: 1,
			define: func(fs *flag.FlagSet) runFunc {
				address := fs.String("address", "", "SDC address host:port")
				return func(ctx context.Context, s *session, args []string) error {
					raw, err := s.call(ctx, "POST", "/sdc/add", nil, map[string]any{"name": args[0], "address": *address})
					if err != nil {
						return err
					}
					return created(s, kindSDC, raw)
				}
			}},
		listVerb("sdc list", kindSDC, renderSDCs),
		showVerb("sdc show", "ID|NAME", kindSDC, renderSDC),
		deleteVerb("sdc delete", "ID|NAME", kindSDC),
	}
}

func sdsStateVerb(action, route, summary string) verb {
	return verb{path: "sds " + action, synopsis: "ID|NAME", summary: summary, minArgs: 1, maxArgs: 1,
		define: func(fs *flag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, args []string) error {
				r, err := s.resolve(ctx, kindSDS, args[0])
				if err != nil {
					return err
				}
				raw, err := s.call(ctx, "POST", r.path(kindSDS)+"/"+route, nil, nil)
				if err != nil {
					return err
				}
				return emit(s, raw, func(v json.RawMessage) error {
					var sds fsm.SDS
					if json.Unmarshal(v, &sds) == nil && sds.State != "" {
						fmt.Fprintf(s.stdout, "SDS %s is now %s\n", r, sds.State)
					} else {
						fmt.Fprintf(s.stdout, "SDS %s: %s done\n", r, action)
					}
					return nil
				})
			}
		}}
}

func renderPDs(ctx context.Context, s *session, items []fsm.ProtectionDomain) {
	t := newTable(s.stdout, "ID", "NAME", "CREATED")
	for _, p := range items {
		t.row(p.ID, p.Name, fmtTime(p.CreatedAt))
	}
	t.flush()
}

func renderPD(ctx context.Context, s *session, p fsm.ProtectionDomain) {
	newBlock(s.stdout).add("id", p.ID).add("name", p.Name).add("created", fmtTime(p.CreatedAt)).print()
}

func renderFaultSets(ctx context.Context, s *session, items []fsm.FaultSet) {
	t := newTable(s.stdout, "ID", "NAME", "PD", "CREATED")
	for _, f := range items {
		t.row(f.ID, f.Name, s.nameOf(ctx, kindPD, f.PDID), fmtTime(f.CreatedAt))
	}
	t.flush()
}

func renderFaultSet(ctx context.Context, s *session, f fsm.FaultSet) {
	newBlock(s.stdout).add("id", f.ID).add("name", f.Name).
		add("protection domain", s.nameOf(ctx, kindPD, f.PDID)).add("created", fmtTime(f.CreatedAt)).print()
}

func renderPools(ctx context.Context, s *session, items []fsm.Pool) {
	t := newTable(s.stdout, "ID", "NAME", "PD", "POLICY", "CAPACITY_GB", "PROVISIONED_GB", "THICK_GB", "CHUNK_MB", "VOLUMES")
	for _, p := range items {
		t.row(p.ID, p.Name, s.nameOf(ctx, kindPD, p.PDID), p.ProtectionPolicy, p.TotalCapacityGB,
			p.ProvisionedGB, p.ThickReservedGB, p.ChunkSizeMB, p.VolumeCount)
	}
	t.flush()
}

func renderPool(ctx context.Context, s *session, p fsm.Pool) {
	newBlock(s.stdout).add("id", p.ID).add("name", p.Name).
		add("protection domain", s.nameOf(ctx, kindPD, p.PDID)).
		add("protection policy", p.ProtectionPolicy).
		add("total capacity", fmt.Sprintf("%d GB", p.TotalCapacityGB)).
		add("provisioned", fmt.Sprintf("%d GB", p.ProvisionedGB)).
		add("thick reserved", fmt.Sprintf("%d GB", p.ThickReservedGB)).
		add("chunk size", fmt.Sprintf("%d MB", p.ChunkSizeMB)).
		add("volumes", p.VolumeCount).
		add("created", fmtTime(p.CreatedAt)).print()
}

func renderSDSs(ctx context.Context, s *session, items []fsm.SDS) {
	t := newTable(s.stdout, "ID", "NAME", "STATE", "PD", "FAULT_SET", "ADDRESS", "CAPACITY_GB", "DEVICES")
	for _, d := range items {
		fset := ""
		if d.FaultSetID != nil {
			fset = s.nameOf(ctx, kindFS, *d.FaultSetID)
		}
		t.row(d.ID, d.Name, d.State, s.nameOf(ctx, kindPD, d.ProtectionDomainID), fset, d.Address,
			d.TotalCapacityGB, strings.Join(d.Devices, ","))
	}
	t.flush()
}

func renderSDS(ctx context.Context, s *session, d fsm.SDS) {
	fset := ""
	if d.FaultSetID != nil {
		fset = s.nameOf(ctx, kindFS, *d.FaultSetID)
	}
	newBlock(s.stdout).add("id", d.ID).add("name", d.Name).add("state", d.State).
		add("state changed", fmtTime(d.StateChangedAt)).
		add("protection domain", s.nameOf(ctx, kindPD, d.ProtectionDomainID)).
		add("fault set", fset).add("address", d.Address).
		add("capacity", fmt.Sprintf("%d GB", d.TotalCapacityGB)).
		add("devices", strings.Join(d.Devices, ", ")).
		add("created", fmtTime(d.CreatedAt)).print()
}

func renderSDCs(ctx context.Context, s *session, items []fsm.SDC) {
	t := newTable(s.stdout, "ID", "NAME", "STATE", "ADDRESS", "CREATED")
	for _, c := range items {
		t.row(c.ID, c.Name, c.State, c.Address, fmtTime(c.CreatedAt))
	}
	t.flush()
}

func renderSDC(ctx context.Context, s *session, c fsm.SDC) {
	newBlock(s.stdout).add("id", c.ID).add("name", c.Name).add("state", c.State).
		add("address", c.Address).add("created", fmtTime(c.CreatedAt)).print()
}
