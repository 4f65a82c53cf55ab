package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
)

// kind is an object type of the admin API.
type kind struct {
	noun   string // "volume"
	plural string // "volumes"
	route  string // "/vol"
	a      string // article: "a" or "an"
}

var (
	kindPD   = kind{"protection domain", "protection domains", "/pd", "a"}
	kindFS   = kind{"fault set", "fault sets", "/faultset", "a"}
	kindPool = kind{"pool", "pools", "/pool", "a"}
	kindSDS  = kind{"SDS", "SDSs", "/sds", "an"}
	kindSDC  = kind{"SDC", "SDCs", "/sdc", "an"}
	kindVol  = kind{"volume", "volumes", "/vol", "a"}
)

// ErrNotFound is a name that resolves to no object.
var ErrNotFound = errors.New("not found")

// ref is an object the user named on the command line, resolved to its id.
type ref struct {
	id   int64
	name string // the name the user gave, "" if they gave the id
}

func (r ref) String() string {
	if r.name != "" {
		return fmt.Sprintf("%s (id %d)", r.name, r.id)
	}
	return strconv.FormatInt(r.id, 10)
}

func (r ref) path(k kind) string { return fmt.Sprintf("%s/%d", k.route, r.id) }

// isID reports whether s is a numeric id; names are never all digits.
func isID(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// resolve turns an id or a name into a ref, looking names up through the list route.
func (s *session) resolve(ctx context.Context, k kind, arg string) (ref, error) {
	if isID(arg) {
		id, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return ref{}, usagef("", "%s id %q is out of range", k.noun, arg)
		}
		return ref{id: id}, nil
	}
	var items []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	if err := s.api.Get(ctx, k.route+"/list", nil, &items); err != nil {
		return ref{}, fmt.Errorf("looking up %s %q: %w", k.noun, arg, err)
	}
	for _, it := range items {
		if it.Name == arg {
			return ref{id: it.ID, name: arg}, nil
		}
	}
	return ref{}, fmt.Errorf("no %s named %q: %w", k.noun, arg, ErrNotFound)
}

// names returns id -> name for a kind, for display only: on error it returns nil and the
// caller shows ids.
func (s *session) names(ctx context.Context, k kind) map[int64]string {
	if m, ok := s.nameMap[k.route]; ok {
		return m
	}
	var items []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	var m map[int64]string
	if err := s.api.Get(ctx, k.route+"/list", nil, &items); err == nil {
		m = make(map[int64]string, len(items))
		for _, it := range items {
			m[it.ID] = it.Name
		}
	}
	if s.nameMap == nil {
		s.nameMap = map[string]map[int64]string{}
	}
	s.nameMap[k.route] = m
	return m
}

// nameOf shows an object as "name" or, when the name is unknown, its id.
func (s *session) nameOf(ctx context.Context, k kind, id int64) string {
	if n, ok := s.names(ctx, k)[id]; ok && n != "" {
		return n
	}
	return strconv.FormatInt(id, 10)
}

// call sends a request and returns the raw JSON answer.
func (s *session) call(ctx context.Context, method, path string, query url.Values, body any) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := s.api.Do(ctx, method, path, query, body, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// emit prints raw under --json, else runs the human renderer with raw decoded into T.
func emit[T any](s *session, raw json.RawMessage, human func(v T) error) error {
	if s.json {
		return printJSON(s.stdout, raw)
	}
	var v T
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("unexpected answer from the API: %w", err)
		}
	}
	return human(v)
}

// listVerb is "<kind> list": a table of every object.
func listVerb[T any](path string, k kind, render func(ctx context.Context, s *session, items []T)) verb {
	return verb{
		path: path, summary: "list " + k.plural, maxArgs: 0,
		define: func(fs *flag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, _ []string) error {
				raw, err := s.call(ctx, "GET", k.route+"/list", nil, nil)
				if err != nil {
					return err
				}
				return emit(s, raw, func(items []T) error {
					if len(items) == 0 {
						fmt.Fprintf(s.stdout, "no %s\n", k.plural)
						return nil
					}
					render(ctx, s, items)
					return nil
				})
			}
		},
	}
}

// showVerb is "<kind> show ID|NAME": one object as a block.
func showVerb[T any](path, arg string, k kind, render func(ctx context.Context, s *session, v T)) verb {
	return verb{
		path: path, synopsis: arg, summary: "show one " + k.noun, minArgs: 1, maxArgs: 1,
		define: func(fs *flag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, args []string) error {
				r, err := s.resolve(ctx, k, args[0])
				if err != nil {
					return err
				}
				raw, err := s.call(ctx, "GET", r.path(k), nil, nil)
				if err != nil {
					return err
				}
				return emit(s, raw, func(v T) error { render(ctx, s, v); return nil })
			}
		},
	}
}

// deleteVerb is "<kind> delete ID|NAME".
func deleteVerb(path, arg string, k kind) verb {
	return verb{
		path: path, synopsis: arg, summary: "delete " + k.a + " " + k.noun, minArgs: 1, maxArgs: 1,
		define: func(fs *flag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, args []string) error {
				r, err := s.resolve(ctx, k, args[0])
				if err != nil {
					return err
				}
				raw, err := s.call(ctx, "DELETE", r.path(k), nil, nil)
				if err != nil {
					return err
				}
				return emit(s, raw, func(json.RawMessage) error {
					fmt.Fprintf(s.stdout, "deleted %s %s\n", k.noun, r)
					return nil
				})
			}
		},
	}
}

// created reports a create call: "created volume vol1 (id 5)".
func created(s *session, k kind, raw json.RawMessage) error {
	return emit(s, raw, func(v struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}) error {
		fmt.Fprintf(s.stdout, "created %s %s (id %d)\n", k.noun, v.Name, v.ID)
		return nil
	})
}

func positive(v, flagName string, n int64) error {
	if n <= 0 {
		return usagef(v, "-%s must be a positive number", flagName)
	}
	return nil
}
