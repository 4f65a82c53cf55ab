package nbd

import (
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config configures a Server. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// Exports resolves export names. Required.
	Exports Exports
	// Logger receives the server's logs; nil discards them.
	Logger hclog.Logger
	// MaxPayload bounds the length of one READ or WRITE (advertised as the
	// maximum block size). Default 32 MiB.
	MaxPayload int
	// MinBlock and PrefBlock are the advertised minimum and preferred block
	// sizes (powers of two). Defaults 1 and 4096. Requests are not rejected
	// for misalignment: MinBlock is advice.
	MinBlock, PrefBlock uint32
	// MaxInflight bounds the requests executing at once per connection.
	// Default 64.
	MaxInflight int
	// MaxInflightBytes bounds the payload buffers held per connection
	// (READ and WRITE data). Default 128 MiB; at least MaxPayload.
	MaxInflightBytes int64
	// DefaultExport is served to a client asking for the empty name. Optional.
	DefaultExport string
	// HandshakeTimeout bounds the option haggling phase. Default 30 s.
	HandshakeTimeout time.Duration
	// ShutdownGrace is how long Close lets in-flight requests finish before
	// cancelling their contexts and dropping connections. Default 5 s.
	ShutdownGrace time.Duration
}

// Defaults.
const (
	DefaultMaxPayload       = 32 << 20
	DefaultMinBlock         = 1
	DefaultPrefBlock        = 4096
	DefaultMaxInflight      = 64
	DefaultMaxInflightBytes = 128 << 20
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultShutdownGrace    = 5 * time.Second
	// DefaultPort is the IANA port for NBD.
	DefaultPort = 10809
)

// DefaultConfig returns a Config with every default filled in (Exports unset).
func DefaultConfig() Config {
	return Config{
		MaxPayload:       DefaultMaxPayload,
		MinBlock:         DefaultMinBlock,
		PrefBlock:        DefaultPrefBlock,
		MaxInflight:      DefaultMaxInflight,
		MaxInflightBytes: DefaultMaxInflightBytes,
		HandshakeTimeout: DefaultHandshakeTimeout,
		ShutdownGrace:    DefaultShutdownGrace,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxPayload == 0 {
		c.MaxPayload = d.MaxPayload
	}
	if c.MinBlock == 0 {
		c.MinBlock = d.MinBlock
	}
	if c.PrefBlock == 0 {
		c.PrefBlock = d.PrefBlock
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = d.MaxInflight
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = max(d.MaxInflightBytes, int64(c.MaxPayload))
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = d.ShutdownGrace
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Validate reports the first invalid field of c (after defaults are applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	pow2 := func(v uint32) bool { return v != 0 && bits.OnesCount32(v) == 1 }
	switch {
	case c.Exports == nil:
		return errors.New("nbd config: Exports is required")
	case !pow2(c.MinBlock) || c.MinBlock > 64<<10:
		return fmt.Errorf("nbd config: MinBlock %d must be a power of two up to 64 KiB", c.MinBlock)
	case !pow2(c.PrefBlock) || c.PrefBlock < c.MinBlock || c.PrefBlock < 512:
		return fmt.Errorf("nbd config: PrefBlock %d must be a power of two, at least 512 and MinBlock", c.PrefBlock)
	case c.MaxPayload < 4096 || c.MaxPayload > 1<<30:
		return fmt.Errorf("nbd config: MaxPayload %d must be between 4 KiB and 1 GiB", c.MaxPayload)
	case uint32(c.MaxPayload)%c.MinBlock != 0 || uint32(c.MaxPayload) < c.PrefBlock:
		return fmt.Errorf("nbd config: MaxPayload %d must be a multiple of MinBlock and at least PrefBlock", c.MaxPayload)
	case c.MaxInflight < 1:
		return fmt.Errorf("nbd config: MaxInflight %d must be positive", c.MaxInflight)
	case c.MaxInflightBytes < int64(c.MaxPayload):
		return fmt.Errorf("nbd config: MaxInflightBytes %d must be at least MaxPayload", c.MaxInflightBytes)
	case c.HandshakeTimeout < 0 || c.ShutdownGrace < 0:
		return errors.New("nbd config: HandshakeTimeout and ShutdownGrace must not be negative")
	}
	return nil
}
