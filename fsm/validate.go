package fsm

import (
	"net"
	"strconv"
	"strings"
)

// Limits on what the object model accepts.
const (
	MaxNameLen     = 64
	MaxCapacityGB  = 1 << 20 // 1 PiB: a guard against typos, not a design limit
	MaxLabelKeyLen = 128
	MaxLabelValLen = 4096
	MaxChunkSizeMB = 1024
)

func validName(kind, name string) error {
	if name == "" {
		return invalid("%s name is required", kind)
	}
	if len(name) > MaxNameLen {
		return invalid("%s name %q is longer than %d characters", kind, name, MaxNameLen)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.:", r)
		if !ok {
			return invalid("%s name %q may only hold letters, digits and _ - . :", kind, name)
		}
	}
	if _, err := strconv.ParseInt(name, 10, 64); err == nil {
		return invalid("%s name %q must not be only digits (it would read as an id)", kind, name)
	}
	return nil
}

func validCapacity(field string, gb int64) error {
	if gb <= 0 {
		return invalid("%s must be a positive number of GB, got %d", field, gb)
	}
	if gb > MaxCapacityGB {
		return invalid("%s %d GB is larger than the %d GB limit", field, gb, MaxCapacityGB)
	}
	return nil
}

func validAddress(field, addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return invalid("%s %q is not host:port", field, addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return invalid("%s %q has no valid port", field, addr)
	}
	return nil
}

// nameTaken reports whether name is already used in table.
func (t *applyTx) nameTaken(table, name string) (bool, error) {
	n, err := t.reader().count(`SELECT COUNT(*) FROM `+table+` WHERE name = ?`, name)
	return n > 0, err
}

func (t *applyTx) uniqueName(table, kind, name string) error {
	if err := validName(kind, name); err != nil {
		return err
	}
	taken, err := t.nameTaken(table, name)
	if err != nil {
		return err
	}
	if taken {
		return conflict("%s %q already exists", kind, name)
	}
	return nil
}
