package token

import "errors"

// Verification and parsing errors. Verify and Cache return them wrapped with context; test with
// errors.Is.
var (
	ErrMalformed    = errors.New("malformed token")
	ErrUnknownKey   = errors.New("token signed with an unknown key")
	ErrBadSignature = errors.New("token signature does not match")
	ErrExpired      = errors.New("token expired")
	ErrWrongVolume  = errors.New("token is for another volume")
	ErrReadOnly     = errors.New("token is read-only")
	ErrRevoked      = errors.New("token revoked by a newer map generation")
	ErrNoToken      = errors.New("no token registered for the volume")
)
