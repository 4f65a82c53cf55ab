package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// printJSON writes raw API JSON indented, ending with a newline.
func printJSON(w io.Writer, raw []byte) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("the API returned invalid JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// encodeJSON prints a value the CLI built itself (for --json of composite verbs).
func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(anySlice(headers)...)
	return t
}

func (t *table) row(cols ...any) {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() { t.tw.Flush() }

func anySlice(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func cell(v any) string {
	s := fmt.Sprint(v)
	if s == "" {
		return "-"
	}
	return s
}

// block prints "key: value" lines with the values aligned.
type block struct {
	w     io.Writer
	lines [][2]string
}

func newBlock(w io.Writer) *block { return &block{w: w} }

func (b *block) add(key string, value any) *block {
	b.lines = append(b.lines, [2]string{key, cell(value)})
	return b
}

func (b *block) print() {
	tw := tabwriter.NewWriter(b.w, 0, 0, 1, ' ', 0)
	for _, l := range b.lines {
		fmt.Fprintf(tw, "%s:\t%s\n", l[0], l[1])
	}
	tw.Flush()
}

// printObject prints a JSON object of unknown shape as a block, keeping the key order the
// server chose; nested values are shown as compact JSON.
func printObject(w io.Writer, raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("the API returned invalid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return printJSON(w, raw)
	}
	b := newBlock(w)
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return fmt.Errorf("the API returned invalid JSON: %w", err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("the API returned invalid JSON: %w", err)
		}
		b.add(fmt.Sprint(kt), plainValue(v))
	}
	b.print()
	return nil
}

func plainValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, v) == nil {
		return buf.String()
	}
	return string(v)
}

// fmtTime renders a Unix-millisecond stamp in UTC.
func fmtTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05Z")
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
