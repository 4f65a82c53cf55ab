// Package config loads role configuration files (HCL) and offers the small checks every role's
// Validate uses, so that a bad config fails at start with a message naming the field.
package config

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2/hclsimple"
)

// LoadHCL decodes the HCL file at path into target (a struct with hcl tags). Unknown or
// mistyped attributes are errors that name the file, line and attribute.
func LoadHCL(path string, target any) error {
	if err := hclsimple.DecodeFile(path, nil, target); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Duration parses a duration field ("500ms", "2s"); empty means def.
func Duration(field, value string, def time.Duration) (time.Duration, error) {
	if value == "" {
		return def, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive duration such as \"500ms\" or \"2s\"", field, value)
	}
	return d, nil
}

// HostPort checks that value is a host:port with a numeric port.
func HostPort(field, value string) error {
	if value == "" {
		return fmt.Errorf("%s is required (host:port)", field)
	}
	host, port, err := net.SplitHostPort(value)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port: %v", field, value, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%s: %q has no valid port", field, value)
	}
	_ = host
	return nil
}
