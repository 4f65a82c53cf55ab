package fsm

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
)

// requestLog is the request-id bookkeeping of one log entry (a single command or a whole
// Batch). Instead of one lookup and one insert per command, it reads the stored outcomes of
// every id in the entry up front and writes the new outcomes at the end of the entry, a few
// multi-row statements each. The table ends up exactly as with per-command statements: within
// the entry a repeated id is answered from memory the way the table would have answered it,
// and nothing else reads the table while the entry applies (the prune runs after it).
type requestLog struct {
	known   map[string]Result // stored outcomes, as lookupRequest would return them
	pending []requestRecord   // new outcomes, in apply order
}

type requestRecord struct {
	rid               string
	ts                int64
	result, kind, msg any // SQL values: string or nil
}

// requestChunks are the row counts of the prepared multi-row statements: a longer list is
// split into chunks of these sizes, the last one padded by repeating its final element, which
// changes nothing (IN lists ignore repeats; INSERT OR REPLACE of an identical row is a no-op
// in effect). Few sizes keep the statement cache small.
var requestChunks = []int{1, 4, 16, 64}

func chunkSize(n int) int {
	for _, size := range requestChunks {
		if n <= size {
			return size
		}
	}
	return requestChunks[len(requestChunks)-1]
}

// placeholders is "(?, ?), (?, ?)" for rows=2, cols=2; "?, ?" for rows=2, cols=0.
func placeholders(rows, cols int) string {
	var b strings.Builder
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		if cols == 0 {
			b.WriteString("?")
			continue
		}
		b.WriteString("(")
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			b.WriteString("?")
		}
		b.WriteString(")")
	}
	return b.String()
}

var (
	lookupRequestsSQL = map[int]string{}
	recordRequestsSQL = map[int]string{}
)

func init() {
	for _, n := range requestChunks {
		lookupRequestsSQL[n] = `SELECT rid, result, err_kind, err_msg FROM requests WHERE rid IN (` + placeholders(n, 0) + `)`
		recordRequestsSQL[n] = `INSERT OR REPLACE INTO requests(rid, ts, result, err_kind, err_msg) VALUES ` + placeholders(n, 5)
	}
}

// loadRequests reads the stored outcomes of rids (empty ids are ignored).
func (t *applyTx) loadRequests(rids []string) *requestLog {
	l := &requestLog{}
	ids := make([]any, 0, len(rids))
	for _, rid := range rids {
		if rid != "" {
			ids = append(ids, rid)
		}
	}
	for len(ids) > 0 {
		size := chunkSize(len(ids))
		chunk := ids[:min(size, len(ids))]
		ids = ids[len(chunk):]
		for len(chunk) < size {
			chunk = append(chunk, chunk[len(chunk)-1])
		}
		rows, err := t.tx.Query(lookupRequestsSQL[size], chunk...)
		if err != nil {
			panic(fmt.Sprintf("fsm: entry %d: look up request ids: %v", t.index, err))
		}
		for rows.Next() {
			var rid string
			var result, kind, msg sql.NullString
			if err := rows.Scan(&rid, &result, &kind, &msg); err != nil {
				panic(fmt.Sprintf("fsm: entry %d: look up request ids: %v", t.index, err))
			}
			if l.known == nil {
				l.known = map[string]Result{}
			}
			switch {
			case kind.Valid:
				l.known[rid] = Result{Err: &Error{Kind: Kind(kind.String), Message: msg.String}}
			case result.Valid:
				l.known[rid] = Result{Value: json.RawMessage(result.String)}
			default:
				l.known[rid] = Result{}
			}
		}
		if err := rows.Close(); err != nil {
			panic(fmt.Sprintf("fsm: entry %d: look up request ids: %v", t.index, err))
		}
		if err := rows.Err(); err != nil {
			panic(fmt.Sprintf("fsm: entry %d: look up request ids: %v", t.index, err))
		}
	}
	return l
}

// lookup returns the outcome stored (or recorded earlier in this entry) for rid.
func (l *requestLog) lookup(rid string) (Result, bool) {
	r, ok := l.known[rid]
	return r, ok
}

// remember records the outcome of the command with id h.RequestID, to be written by flush.
func (l *requestLog) remember(t *applyTx, h Header, value any, err error) {
	rec := requestRecord{rid: h.RequestID, ts: h.Time}
	var stored Result
	if e, ok := AsError(err); ok {
		rec.kind, rec.msg = string(e.Kind), e.Message
		stored.Err = &Error{Kind: e.Kind, Message: e.Message}
	} else if value != nil {
		b, jerr := json.Marshal(value)
		if jerr != nil {
			panic(fmt.Sprintf("fsm: entry %d: encode result: %v", t.index, jerr))
		}
		rec.result = string(b)
		stored.Value = json.RawMessage(b)
	}
	if l.known == nil {
		l.known = map[string]Result{}
	}
	l.known[h.RequestID] = stored
	l.pending = append(l.pending, rec)
}

// flush writes the outcomes remembered since the last flush.
func (l *requestLog) flush(t *applyTx) {
	recs := l.pending
	l.pending = nil
	for len(recs) > 0 {
		size := chunkSize(len(recs))
		chunk := recs[:min(size, len(recs))]
		recs = recs[len(chunk):]
		args := make([]any, 0, 5*size)
		for i := range size {
			r := chunk[min(i, len(chunk)-1)]
			args = append(args, r.rid, r.ts, r.result, r.kind, r.msg)
		}
		t.mustExec(recordRequestsSQL[size], args...)
	}
}
