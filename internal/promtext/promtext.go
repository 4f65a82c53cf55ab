// Package promtext writes Prometheus's text exposition format (version 0.0.4) by hand: the
// SDS and SDC export a few dozen counters and gauges, which do not need a client library.
package promtext

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// ContentType is the exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Writer writes metric families and their samples. The first write error sticks and is
// returned by Err; later writes do nothing.
type Writer struct {
	w   io.Writer
	err error
}

// New returns a Writer to w.
func New(w io.Writer) *Writer { return &Writer{w: w} }

// ForHTTP sets the response's content type and returns a Writer to it.
func ForHTTP(w http.ResponseWriter) *Writer {
	w.Header().Set("Content-Type", ContentType)
	return New(w)
}

// Counter starts a counter family; its samples follow.
func (p *Writer) Counter(name, help string) { p.family(name, "counter", help) }

// Summary starts a summary family; its _sum and _count samples follow.
func (p *Writer) Summary(name, help string) { p.family(name, "summary", help) }

// Gauge starts a gauge family; its samples follow.
func (p *Writer) Gauge(name, help string) { p.family(name, "gauge", help) }

// GaugeOf writes a gauge family of one sample.
func (p *Writer) GaugeOf(name, help string, v float64, labels ...string) {
	p.Gauge(name, help)
	p.Sample(name, v, labels...)
}

// CounterOf writes a counter family of one sample.
func (p *Writer) CounterOf(name, help string, v float64, labels ...string) {
	p.Counter(name, help)
	p.Sample(name, v, labels...)
}

func (p *Writer) family(name, typ, help string) {
	p.printf("# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

// Sample writes one sample of the family name; labels are name, value pairs.
func (p *Writer) Sample(name string, v float64, labels ...string) {
	if len(labels)%2 != 0 {
		panic("promtext: labels must come in name, value pairs")
	}
	var b strings.Builder
	b.WriteString(name)
	for i := 0; i < len(labels); i += 2 {
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(labels[i])
		b.WriteString(`="`)
		b.WriteString(escapeLabel(labels[i+1]))
		b.WriteByte('"')
	}
	if len(labels) > 0 {
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(formatValue(v))
	b.WriteByte('\n')
	p.printf("%s", b.String())
}

// formatValue writes counts as plain integers (139358208, not 1.39358208e+08), other values in
// the shortest form that reads back the same.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Err is the first write error.
func (p *Writer) Err() error { return p.err }

func (p *Writer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// escapeLabel escapes a label value: backslash, double quote and line feed.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// escapeHelp escapes a help text: backslash and line feed.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// Validate checks that text is in the exposition format as this package writes it: every
// sample belongs to a family declared by HELP and TYPE lines before it, names and labels are
// well formed, values are numbers. Tests of the components' /metrics use it.
func Validate(text string) error {
	typed := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n := i + 1
		switch {
		case strings.HasPrefix(line, "# HELP "):
			continue
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) != 4 || !validName(f[2]) || (f[3] != "counter" && f[3] != "gauge" && f[3] != "summary") {
				return fmt.Errorf("line %d: bad TYPE line %q", n, line)
			}
			typed[f[2]] = true
			continue
		case line == "" || strings.HasPrefix(line, "#"):
			return fmt.Errorf("line %d: unexpected %q", n, line)
		}
		name, rest, _ := strings.Cut(line, " ")
		if open := strings.IndexByte(name, '{'); open >= 0 {
			end := strings.LastIndexByte(line, '}')
			if end < open {
				return fmt.Errorf("line %d: unclosed labels in %q", n, line)
			}
			if err := validLabels(line[open+1 : end]); err != nil {
				return fmt.Errorf("line %d: %v in %q", n, err, line)
			}
			name, rest = line[:open], strings.TrimPrefix(line[end+1:], " ")
		}
		family := strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count")
		if !validName(name) || (!typed[name] && !typed[family]) {
			return fmt.Errorf("line %d: sample %q of no declared family", n, name)
		}
		if _, err := strconv.ParseFloat(rest, 64); err != nil {
			return fmt.Errorf("line %d: value %q is not a number", n, rest)
		}
	}
	return nil
}

func validName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r == ':' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// validLabels checks name="value" pairs separated by commas, values escaped as escapeLabel does.
func validLabels(s string) error {
	for s != "" {
		name, rest, ok := strings.Cut(s, `="`)
		if !ok || !validName(name) {
			return fmt.Errorf("bad label name %q", name)
		}
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' {
				i++
			}
		}
		if i >= len(rest) {
			return fmt.Errorf("unterminated value of label %s", name)
		}
		s = strings.TrimPrefix(rest[i+1:], ",")
	}
	return nil
}
