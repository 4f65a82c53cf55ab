package gossip

import "errors"

// Errors returned by this package. Wrapped with context; test with errors.Is.
var (
	// ErrInvalidConfig is returned by Start and Config.Validate; the message names the field.
	ErrInvalidConfig = errors.New("gossip: invalid config")
	// ErrMetaTooLarge means the JSON-encoded Meta exceeds MetaMaxSize (512) bytes.
	ErrMetaTooLarge = errors.New("gossip: node meta too large")
	// ErrBadKey means a gossip key is not base64 of 16, 24 or 32 bytes.
	ErrBadKey = errors.New("gossip: bad key")
	// ErrClosed is returned by calls on a pool after Shutdown (or after Leave, for UpdateMeta).
	ErrClosed = errors.New("gossip: pool is shut down")
)
