package nbd

import "sync/atomic"

// Stats is a snapshot of a server's counters since NewServer.
type Stats struct {
	Connections       uint64 // accepted
	ActiveConnections int64  // in handshake or transmission now
	Handshakes        uint64 // completed into transmission
	ProtocolErrors    uint64 // connections dropped for breaking the protocol

	Reads, Writes, Flushes, Trims, WriteZeroes  uint64 // completed commands
	ReadBytes, WriteBytes, TrimBytes, ZeroBytes uint64
	Errors                                      uint64 // replies with a non-zero error
}

type counters struct {
	connections, handshakes, protocolErrors     atomic.Uint64
	active                                      atomic.Int64
	reads, writes, flushes, trims, writeZeroes  atomic.Uint64
	readBytes, writeBytes, trimBytes, zeroBytes atomic.Uint64
	errors                                      atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Connections:       c.connections.Load(),
		ActiveConnections: c.active.Load(),
		Handshakes:        c.handshakes.Load(),
		ProtocolErrors:    c.protocolErrors.Load(),
		Reads:             c.reads.Load(),
		Writes:            c.writes.Load(),
		Flushes:           c.flushes.Load(),
		Trims:             c.trims.Load(),
		WriteZeroes:       c.writeZeroes.Load(),
		ReadBytes:         c.readBytes.Load(),
		WriteBytes:        c.writeBytes.Load(),
		TrimBytes:         c.trimBytes.Load(),
		ZeroBytes:         c.zeroBytes.Load(),
		Errors:            c.errors.Load(),
	}
}

// count records one completed command of length n.
func (c *counters) count(cmd uint16, n uint32, errno uint32) {
	if errno != 0 {
		c.errors.Add(1)
		return
	}
	switch cmd {
	case cmdRead:
		c.reads.Add(1)
		c.readBytes.Add(uint64(n))
	case cmdWrite:
		c.writes.Add(1)
		c.writeBytes.Add(uint64(n))
	case cmdFlush:
		c.flushes.Add(1)
	case cmdTrim:
		c.trims.Add(1)
		c.trimBytes.Add(uint64(n))
	case cmdWriteZeroes:
		c.writeZeroes.Add(1)
		c.zeroBytes.Add(uint64(n))
	}
}
