package gossip

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseKey(t *testing.T) {
	for _, n := range []int{16, 24, 32} {
		raw := []byte(strings.Repeat("k", n))
		got, err := ParseKey(" " + base64.StdEncoding.EncodeToString(raw) + "\n")
		if err != nil || string(got) != string(raw) {
			t.Errorf("ParseKey(%d bytes) = %q, %v", n, got, err)
		}
	}
	if k, err := ParseKey(""); k != nil || err != nil {
		t.Errorf(`ParseKey("") = %v, %v; want nil, nil`, k, err)
	}
	for in, want := range map[string]string{
		"not base64!!": "not standard base64",
		base64.StdEncoding.EncodeToString([]byte("short")):                    "decodes to 5 bytes, want 16, 24 or 32",
		base64.StdEncoding.EncodeToString(make([]byte, 33)):                   "decodes to 33 bytes",
		base64.URLEncoding.EncodeToString([]byte(strings.Repeat("\xff", 32))): "not standard base64",
	} {
		_, err := ParseKey(in)
		if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKey(%q) = %v, want ErrBadKey containing %q", in, err, want)
		}
	}
}

func TestValidateNamesTheField(t *testing.T) {
	good := Config{BindAddr: "127.0.0.1:7901", Meta: Meta{ID: "mdm-1", Caps: []string{CapMDM}}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for field, mutate := range map[string]func(*Config){
		"BindAddr is required": func(c *Config) { c.BindAddr = "" },
		"BindAddr \"7901\"":    func(c *Config) { c.BindAddr = "7901" },
		"BindAddr \"localhost": func(c *Config) { c.BindAddr = "localhost:7901" },
		"AdvertiseAddr":        func(c *Config) { c.AdvertiseAddr = "host-without-port" },
		"Join[1] is empty":     func(c *Config) { c.Join = []string{"127.0.0.1:7902", " "} },
		"Key is 5 bytes":       func(c *Config) { c.Key = []byte("short") },
		"Meta.ID is required":  func(c *Config) { c.Meta.ID = "" },
		"Meta:":                func(c *Config) { c.Meta.Version = strings.Repeat("v", 600) },
		"ProbeTimeout":         func(c *Config) { c.ProbeTimeout = time.Second },
		"SuspicionMult":        func(c *Config) { c.SuspicionMult = -1 },
	} {
		c := good
		mutate(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: Validate() = %v", field, err)
		}
		if _, err := Start(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Start() = %v", field, err)
		}
	}
}
