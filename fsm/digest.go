package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
)

// Digest identifies a replica's state: equal digests at equal applied index mean equal state.
type Digest struct {
	Index  uint64 `json:"applied_index"`
	Digest string `json:"digest"`
}

// Digest hashes a canonical dump of every state table, read in one transaction together with
// the applied index it belongs to.
func (s *Store) Digest() (Digest, error) {
	var d Digest
	err := s.Read(func(r *Reader) error {
		idx, err := r.AppliedIndex()
		if err != nil {
			return err
		}
		d.Index = idx
		d.Digest, err = r.digest()
		return err
	})
	return d, err
}

func (r *Reader) digest() (string, error) {
	h := sha256.New()
	var buf [9]byte
	for _, t := range stateTables {
		h.Write([]byte("table:" + t.name + "\x00"))
		rows, err := r.q.Query(`SELECT * FROM ` + t.name + ` ORDER BY ` + t.order)
		if err != nil {
			return "", fmt.Errorf("fsm: digest %s: %w", t.name, err)
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return "", fmt.Errorf("fsm: digest %s: %w", t.name, err)
			}
			// Each value is tagged with its type so that, say, NULL and "" differ.
			for _, v := range vals {
				switch x := v.(type) {
				case nil:
					h.Write([]byte{0})
				case int64:
					buf[0] = 1
					binary.BigEndian.PutUint64(buf[1:], uint64(x))
					h.Write(buf[:])
				case float64:
					buf[0] = 2
					binary.BigEndian.PutUint64(buf[1:], math.Float64bits(x))
					h.Write(buf[:])
				case string:
					writeBytes(h, 3, []byte(x))
				case []byte:
					writeBytes(h, 4, x)
				default:
					writeBytes(h, 5, []byte(fmt.Sprint(x)))
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return "", fmt.Errorf("fsm: digest %s: %w", t.name, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeBytes(h interface{ Write([]byte) (int, error) }, tag byte, b []byte) {
	var hdr [9]byte
	hdr[0] = tag
	binary.BigEndian.PutUint64(hdr[1:], uint64(len(b)))
	h.Write(hdr[:])
	h.Write(b)
}
