package wire

import (
	"fmt"
	"math"
	"sync/atomic"
)

// Logger is the logging the package needs; *slog.Logger and hclog.Logger both satisfy it.
// Warn: a peer broke the protocol or a connection failed. Debug: ordinary connection ends.
type Logger interface {
	Debug(msg string, args ...any)
	Warn(msg string, args ...any)
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...any) {}
func (nopLogger) Warn(string, ...any)  {}

// DefaultMaxInflight bounds the requests a server handles at once per connection.
const DefaultMaxInflight = 128

// ClientOptions configure a Conn. The zero value gives the defaults.
type ClientOptions struct {
	// MaxPayload bounds request payloads and READ lengths sent, and reply payloads accepted.
	// 0 means DefaultMaxPayload. Keep it equal to the server's.
	MaxPayload int
	Logger     Logger // nil discards
	// IDs, when set, is where request ids come from: shared by several connections, the ids of
	// their requests increase across all of them in the order Do sends them, which a server
	// can use to order requests that arrive on different connections (SDS replica writes,
	// FlagOrdered). nil: each connection counts its own.
	IDs *atomic.Uint64
}

// ServerOptions configure Serve. The zero value gives the defaults.
type ServerOptions struct {
	// MaxPayload bounds request payloads and READ lengths; a larger one closes the connection.
	// 0 means DefaultMaxPayload.
	MaxPayload int
	// MaxInflight bounds the requests dispatched to the handler at once; when reached, Serve
	// stops reading the connection (back-pressure). 0 means DefaultMaxInflight.
	MaxInflight int
	Logger      Logger // nil discards
}

func checkMaxPayload(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultMaxPayload, nil
	case n < 0 || n > math.MaxUint32:
		return 0, fmt.Errorf("wire: MaxPayload %d out of range [1, %d]", n, uint32(math.MaxUint32))
	}
	return n, nil
}

func (o ClientOptions) withDefaults() (ClientOptions, error) {
	var err error
	if o.MaxPayload, err = checkMaxPayload(o.MaxPayload); err != nil {
		return o, err
	}
	if o.Logger == nil {
		o.Logger = nopLogger{}
	}
	return o, nil
}

func (o ServerOptions) withDefaults() (ServerOptions, error) {
	var err error
	if o.MaxPayload, err = checkMaxPayload(o.MaxPayload); err != nil {
		return o, err
	}
	switch {
	case o.MaxInflight == 0:
		o.MaxInflight = DefaultMaxInflight
	case o.MaxInflight < 0:
		return o, fmt.Errorf("wire: MaxInflight %d must be positive", o.MaxInflight)
	}
	if o.Logger == nil {
		o.Logger = nopLogger{}
	}
	return o, nil
}
