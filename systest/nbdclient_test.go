package systest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// A minimal NBD client (the jepsen harness's, copied so that process tests do not depend on the
// chaos harness): fixed newstyle handshake with NBD_OPT_GO, then READ and WRITE with simple
// replies, one request at a time. It measures what an NBD client sees: each request's latency
// and its error, if any.

// NBD wire constants the client needs.
const (
	nbdMagic         uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic      uint64 = 0x49484156454f5054 // "IHAVEOPT"
	nbdOptReplyMagic uint64 = 0x0003e889045565a9
	nbdRequestMagic  uint32 = 0x25609513
	nbdReplyMagic    uint32 = 0x67446698

	nbdFlagFixedNewstyle uint16 = 1
	nbdFlagNoZeroes      uint16 = 2
	nbdOptGo             uint32 = 7
	nbdRepAck            uint32 = 1
	nbdRepInfo           uint32 = 3
	nbdInfoExport        uint16 = 0

	nbdCmdRead  uint16 = 0
	nbdCmdWrite uint16 = 1
	nbdCmdDisc  uint16 = 2

	nbdEPERM  uint32 = 1
	nbdEINVAL uint32 = 22
)

// Errors of the NBD client.
var (
	// ErrNBDHandshake: the server refused the export or spoke something else; nothing was sent
	// to the volume.
	ErrNBDHandshake = errors.New("systest: nbd handshake failed")
	// ErrNBDRefused: the server answered the request with EPERM or EINVAL, which it checks
	// before executing anything (sdc/nbd conn.check).
	ErrNBDRefused = errors.New("systest: nbd request refused")
	// ErrNBDIO: the server answered with another error (EIO after its io_timeout, ...): a write
	// may or may not have happened.
	ErrNBDIO = errors.New("systest: nbd io error")
)

// NBDConn is one NBD connection in transmission phase.
type NBDConn struct {
	nc     net.Conn
	Size   uint64
	Flags  uint16
	handle uint64
}

// DialNBD connects to addr and negotiates export with NBD_OPT_GO; timeout bounds the dial and
// the handshake.
func DialNBD(ctx context.Context, addr, export string, timeout time.Duration) (*NBDConn, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &NBDConn{nc: nc}
	nc.SetDeadline(time.Now().Add(timeout))
	if err := c.handshake(export); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *NBDConn) handshake(export string) error {
	var hello [18]byte
	if _, err := io.ReadFull(c.nc, hello[:]); err != nil {
		return fmt.Errorf("%w: reading greeting: %v", ErrNBDHandshake, err)
	}
	if binary.BigEndian.Uint64(hello[0:]) != nbdMagic || binary.BigEndian.Uint64(hello[8:]) != nbdOptMagic {
		return fmt.Errorf("%w: not a newstyle NBD server", ErrNBDHandshake)
	}
	sflags := binary.BigEndian.Uint16(hello[16:])
	if sflags&nbdFlagFixedNewstyle == 0 {
		return fmt.Errorf("%w: server is not fixed newstyle", ErrNBDHandshake)
	}
	cflags := uint32(nbdFlagFixedNewstyle)
	if sflags&nbdFlagNoZeroes != 0 {
		cflags |= uint32(nbdFlagNoZeroes)
	}
	// Client flags, then NBD_OPT_GO: name length, name, zero information requests.
	msg := binary.BigEndian.AppendUint32(nil, cflags)
	msg = binary.BigEndian.AppendUint64(msg, nbdOptMagic)
	msg = binary.BigEndian.AppendUint32(msg, nbdOptGo)
	msg = binary.BigEndian.AppendUint32(msg, uint32(4+len(export)+2))
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(export)))
	msg = append(msg, export...)
	msg = binary.BigEndian.AppendUint16(msg, 0)
	if _, err := c.nc.Write(msg); err != nil {
		return fmt.Errorf("%w: %v", ErrNBDHandshake, err)
	}
	for {
		var hdr [20]byte
		if _, err := io.ReadFull(c.nc, hdr[:]); err != nil {
			return fmt.Errorf("%w: reading option reply: %v", ErrNBDHandshake, err)
		}
		if binary.BigEndian.Uint64(hdr[0:]) != nbdOptReplyMagic {
			return fmt.Errorf("%w: bad option reply magic", ErrNBDHandshake)
		}
		typ := binary.BigEndian.Uint32(hdr[12:])
		n := binary.BigEndian.Uint32(hdr[16:])
		if n > 1<<16 {
			return fmt.Errorf("%w: option reply of %d bytes", ErrNBDHandshake, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.nc, data); err != nil {
			return fmt.Errorf("%w: reading option reply: %v", ErrNBDHandshake, err)
		}
		switch {
		case typ == nbdRepAck:
			if c.Size == 0 && c.Flags == 0 {
				return fmt.Errorf("%w: GO acknowledged without export information", ErrNBDHandshake)
			}
			return nil
		case typ == nbdRepInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == nbdInfoExport:
			c.Size = binary.BigEndian.Uint64(data[2:])
			c.Flags = binary.BigEndian.Uint16(data[10:])
		case typ&(1<<31) != 0:
			return fmt.Errorf("%w: export %q: error reply %#x: %s", ErrNBDHandshake, export, typ, data)
		}
	}
}

// Write writes data at off. The error wraps ErrNBDRefused when the server refused the request
// before executing it; any other error leaves the outcome unknown.
func (c *NBDConn) Write(off uint64, data []byte, deadline time.Time) error {
	_, err := c.do(nbdCmdWrite, off, uint32(len(data)), data, deadline)
	return err
}

// Read reads n bytes at off.
func (c *NBDConn) Read(off uint64, n uint32, deadline time.Time) ([]byte, error) {
	return c.do(nbdCmdRead, off, n, nil, deadline)
}

func (c *NBDConn) do(cmd uint16, off uint64, n uint32, payload []byte, deadline time.Time) ([]byte, error) {
	c.nc.SetDeadline(deadline)
	c.handle++
	req := make([]byte, 28, 28+len(payload))
	binary.BigEndian.PutUint32(req[0:], nbdRequestMagic)
	binary.BigEndian.PutUint16(req[6:], cmd)
	binary.BigEndian.PutUint64(req[8:], c.handle)
	binary.BigEndian.PutUint64(req[16:], off)
	binary.BigEndian.PutUint32(req[24:], n)
	if _, err := c.nc.Write(append(req, payload...)); err != nil {
		return nil, err
	}
	var rep [16]byte
	if _, err := io.ReadFull(c.nc, rep[:]); err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint32(rep[0:]) != nbdReplyMagic {
		return nil, fmt.Errorf("systest: nbd: bad reply magic %#x", binary.BigEndian.Uint32(rep[0:]))
	}
	if h := binary.BigEndian.Uint64(rep[8:]); h != c.handle {
		return nil, fmt.Errorf("systest: nbd: reply for handle %d, want %d", h, c.handle)
	}
	switch errno := binary.BigEndian.Uint32(rep[4:]); errno {
	case 0:
	case nbdEPERM, nbdEINVAL:
		return nil, fmt.Errorf("%w: errno %d", ErrNBDRefused, errno)
	default:
		return nil, fmt.Errorf("%w: errno %d", ErrNBDIO, errno)
	}
	if cmd != nbdCmdRead {
		return nil, nil
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.nc, data); err != nil {
		return nil, err
	}
	return data, nil
}

// Close sends NBD_CMD_DISC (best effort) and closes the connection.
func (c *NBDConn) Close() error {
	var req [28]byte
	binary.BigEndian.PutUint32(req[0:], nbdRequestMagic)
	binary.BigEndian.PutUint16(req[6:], nbdCmdDisc)
	c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.nc.Write(req[:])
	return c.nc.Close()
}
