package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Option data longer than maxOptionLen is refused with NBD_REP_ERR_TOO_BIG
// (after discarding it, up to maxOptionDiscard; beyond that the connection
// is dropped). No real option comes near: the largest is a 4 KiB name plus a
// few info requests.
const (
	maxOptionLen     = 64 << 10
	maxOptionDiscard = 1 << 20
)

// errHandshakeEnd ends the handshake without entering transmission (ABORT).
var errHandshakeEnd = errors.New("client ended the handshake")

// handshake runs the fixed newstyle negotiation. It returns nil when the
// connection has entered transmission with c.export set.
func (c *conn) handshake() error {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hello[:]); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return fmt.Errorf("reading client flags: %w", err)
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^clientFlagsKnown != 0 {
		return fmt.Errorf("%w: unknown client flags %#x", errProtocol, flags)
	}
	if flags&clientFlagFixedNewstyle == 0 {
		// Plain newstyle clients cannot be sent option replies; pflex only
		// speaks fixed newstyle, so the polite answer is to hang up.
		return fmt.Errorf("%w: client does not support fixed newstyle", errProtocol)
	}
	c.noZeroes = flags&clientFlagNoZeroes != 0

	for {
		var hdr [optHeaderSize]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return fmt.Errorf("reading option header: %w", err)
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicOpt {
			return fmt.Errorf("%w: bad option magic %#x", errProtocol, m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		length := binary.BigEndian.Uint32(hdr[12:])
		if length > maxOptionLen {
			if opt == optExportName || length > maxOptionDiscard {
				return fmt.Errorf("%w: option %s with %d bytes of data", errProtocol, optName(opt), length)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(length)); err != nil {
				return fmt.Errorf("discarding option data: %w", err)
			}
			if err := c.optReply(opt, repErrTooBig, []byte("option data too long")); err != nil {
				return err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return fmt.Errorf("reading option data: %w", err)
		}
		c.log.Debug("option", "option", optName(opt), "length", length)
		done, err := c.option(opt, data)
		if err != nil || done {
			return err
		}
	}
}

// option answers one option; done is true when transmission begins.
func (c *conn) option(opt uint32, data []byte) (done bool, err error) {
	switch opt {
	case optExportName:
		name := string(data)
		e, resolved, ok := c.lookup(name)
		if !ok {
			// This option cannot carry an error: the spec says hang up.
			return false, fmt.Errorf("%w: EXPORT_NAME for unknown export %q", errNoExport, name)
		}
		var buf [10 + exportNameZeroes]byte
		binary.BigEndian.PutUint64(buf[0:], uint64(e.Size()))
		binary.BigEndian.PutUint16(buf[8:], transmissionFlags(e))
		n := len(buf)
		if c.noZeroes {
			n = 10
		}
		c.attach(e, resolved)
		if _, err := c.nc.Write(buf[:n]); err != nil {
			return false, err
		}
		return true, nil

	case optAbort:
		// Best effort: the client may already have gone.
		_ = c.optReply(opt, repAck, nil)
		return false, errHandshakeEnd

	case optList:
		if len(data) != 0 {
			return false, c.optReply(opt, repErrInvalid, []byte("LIST takes no data"))
		}
		for _, info := range c.srv.cfg.Exports.List() {
			name, desc := clip(info.Name), clip(info.Description)
			p := make([]byte, 4, 4+len(name)+len(desc))
			binary.BigEndian.PutUint32(p, uint32(len(name)))
			p = append(append(p, name...), desc...)
			if err := c.optReply(opt, repServer, p); err != nil {
				return false, err
			}
		}
		return false, c.optReply(opt, repAck, nil)

	case optInfo, optGo:
		return c.optInfoGo(opt, data)
	}
	// STARTTLS, STRUCTURED_REPLY, META_CONTEXT, EXTENDED_HEADERS and
	// anything unknown: negotiation continues without it.
	return false, c.optReply(opt, repErrUnsup, []byte("option not supported by this server"))
}

// optInfoGo answers NBD_OPT_INFO and NBD_OPT_GO.
func (c *conn) optInfoGo(opt uint32, data []byte) (done bool, err error) {
	invalid := func(msg string) (bool, error) {
		return false, c.optReply(opt, repErrInvalid, []byte(msg))
	}
	if len(data) < 6 {
		return invalid("option data too short")
	}
	nameLen := binary.BigEndian.Uint32(data)
	if nameLen > maxStringLen || uint64(nameLen)+6 > uint64(len(data)) {
		return invalid("bad export name length")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*nreq {
		return invalid("bad information request count")
	}
	var wantName, wantDesc bool
	for i := 0; i < nreq; i++ {
		switch binary.BigEndian.Uint16(rest[2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}

	e, resolved, ok := c.lookupFor(opt, name)
	if !ok {
		return false, c.optReply(opt, repErrUnknown, []byte(fmt.Sprintf("export %q not found", name)))
	}

	var info [12]byte
	binary.BigEndian.PutUint16(info[0:], infoExport)
	binary.BigEndian.PutUint64(info[2:], uint64(e.Size()))
	binary.BigEndian.PutUint16(info[10:], transmissionFlags(e))
	if err := c.optReply(opt, repInfo, info[:]); err != nil {
		return false, err
	}
	if wantName {
		p := binary.BigEndian.AppendUint16(nil, infoName)
		if err := c.optReply(opt, repInfo, append(p, clip(resolved)...)); err != nil {
			return false, err
		}
	}
	if desc := clip(description(c.srv.cfg.Exports, resolved)); wantDesc && desc != "" {
		p := binary.BigEndian.AppendUint16(nil, infoDescription)
		if err := c.optReply(opt, repInfo, append(p, desc...)); err != nil {
			return false, err
		}
	}
	// Block sizes are sent whether asked for or not (the spec allows it).
	var bs [14]byte
	binary.BigEndian.PutUint16(bs[0:], infoBlockSize)
	binary.BigEndian.PutUint32(bs[2:], c.srv.cfg.MinBlock)
	binary.BigEndian.PutUint32(bs[6:], c.srv.cfg.PrefBlock)
	binary.BigEndian.PutUint32(bs[10:], uint32(c.srv.cfg.MaxPayload))
	if err := c.optReply(opt, repInfo, bs[:]); err != nil {
		return false, err
	}
	if opt == optGo {
		c.attach(e, resolved)
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return false, err
	}
	return opt == optGo, nil
}

// lookupFor resolves name; for GO it first records the name on the
// connection so that a concurrent ExportRemoved cannot miss it.
func (c *conn) lookupFor(opt uint32, name string) (Export, string, bool) {
	if opt == optGo {
		return c.lookup(name)
	}
	resolved := c.resolve(name)
	e, ok := c.srv.cfg.Exports.Lookup(resolved)
	return e, resolved, ok
}

// lookup resolves name for entering transmission. The name is published
// before the lookup: ExportRemoved either sees it or runs before the lookup,
// which then fails because the caller removed the export first.
func (c *conn) lookup(name string) (Export, string, bool) {
	resolved := c.resolve(name)
	c.setExportName(resolved)
	e, ok := c.srv.cfg.Exports.Lookup(resolved)
	if !ok {
		c.setExportName("")
	}
	return e, resolved, ok
}

func (c *conn) resolve(name string) string {
	if name == "" && c.srv.cfg.DefaultExport != "" {
		return c.srv.cfg.DefaultExport
	}
	return name
}

// optReply sends one fixed newstyle option reply.
func (c *conn) optReply(opt, typ uint32, data []byte) error {
	buf := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(buf[0:], magicOptReply)
	binary.BigEndian.PutUint32(buf[8:], opt)
	binary.BigEndian.PutUint32(buf[12:], typ)
	binary.BigEndian.PutUint32(buf[16:], uint32(len(data)))
	_, err := c.nc.Write(append(buf, data...))
	return err
}

func transmissionFlags(e Export) uint16 {
	f := tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagCanMultiConn
	if e.ReadOnly() {
		return f | tflagReadOnly
	}
	return f | tflagSendTrim | tflagSendWriteZeroes
}

// clip bounds a string sent to the client to the spec's 4096 bytes.
func clip(s string) string {
	if len(s) > maxStringLen {
		return s[:maxStringLen]
	}
	return s
}
