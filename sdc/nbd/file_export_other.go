//go:build !linux

package nbd

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

func punchHole(*os.File, int64, int64) error { return errUnsupported }

func zeroRange(*os.File, int64, int64) error { return errUnsupported }
