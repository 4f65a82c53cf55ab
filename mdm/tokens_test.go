package mdm_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/token"
	"pflex/mdm/mdmtest"
)

func verifierFrom(t *testing.T, io *api.IOState) *token.Verifier {
	t.Helper()
	ring := &token.Keyring{}
	for _, k := range io.Keys {
		if err := ring.Add(k.ID, k.Key); err != nil {
			t.Fatal(err)
		}
	}
	v := token.NewVerifier(ring)
	for id, g := range io.Generations {
		var vid int64
		for _, ch := range id {
			vid = vid*10 + int64(ch-'0')
		}
		v.SetGeneration(vid, g)
	}
	return v
}

func TestTokenAuthorityLedgerAndLayout(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	seed(t, c, 0) // pd1, pool1, sdc1, vol1
	c.Do(0, "POST", "/sdc/add", map[string]any{"name": "sdc2"}, nil)
	c.Do(0, "POST", "/vol/map", map[string]any{"volume_id": 1, "sdc_id": 1}, nil)
	c.Do(0, "POST", "/vol/map", map[string]any{"volume_id": 1, "sdc_id": 2, "access_mode": "readOnly"}, nil)

	var exports []api.MappedVolume
	if code, _, _ := c.Do(1, "GET", "/sdc/2/volumes", nil, &exports); code != 200 || len(exports) != 1 || exports[0].AccessMode != "readOnly" || exports[0].SizeBytes != 8<<30 {
		t.Fatalf("sdc volumes: %d %+v", code, exports)
	}

	// An SDS registers and receives the keys to verify tokens with.
	reg := fsm.RegisterNode{ID: "sds-1", Capabilities: []string{"SDS"}, DataAddr: "127.0.0.1:9701",
		SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: fsm.Devices{"/d"}, TotalCapacityGB: 10}}
	var rr api.RegisterResponse
	if code, _, err := c.Do(1, "POST", "/discovery/register", reg, &rr); err != nil || code != 200 || rr.IO == nil || len(rr.IO.Keys) != 1 {
		t.Fatalf("register: %d %v %+v", code, err, rr)
	}
	verifier := verifierFrom(t, rr.IO)

	var tr api.TokenResponse
	if code, _, err := c.Do(2, "POST", "/token/issue", api.TokenRequest{VolumeID: 1, SDCID: 1}, &tr); err != nil || code != 200 {
		t.Fatalf("issue: %d %v", code, err)
	}
	tok, err := token.ParseString(tr.Token)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifier.Verify(tok, 1, true, time.Now()); err != nil {
		t.Fatalf("SDS-side verify: %v", err)
	}
	if tr.ExpiresAt < time.Now().Add(30*time.Second).UnixMilli() || tr.AccessMode != "readWrite" {
		t.Fatalf("token %+v", tr)
	}
	for _, bad := range []struct {
		req  api.TokenRequest
		code int
	}{
		{api.TokenRequest{VolumeID: 1, SDCID: 2}, http.StatusForbidden},                          // readOnly map asked to write
		{api.TokenRequest{VolumeID: 9, SDCID: 1}, http.StatusNotFound},                           // no such volume
		{api.TokenRequest{VolumeID: 1, SDCID: 7}, http.StatusNotFound},                           // no such SDC
		{api.TokenRequest{VolumeID: 1, SDCID: 1, AccessMode: "sideways"}, http.StatusBadRequest}, // bad mode
	} {
		var e api.Error
		if code, _, _ := c.Do(0, "POST", "/token/issue", bad.req, &e); code != bad.code {
			t.Errorf("issue %+v: %d %+v, want %d", bad.req, code, e, bad.code)
		}
	}
	var ro api.TokenResponse
	if code, _, _ := c.Do(0, "POST", "/token/issue", api.TokenRequest{VolumeID: 1, SDCID: 2, AccessMode: "readOnly"}, &ro); code != 200 {
		t.Fatalf("readOnly token: %d", code)
	}
	roTok, _ := token.ParseString(ro.Token)
	if err := verifier.Verify(roTok, 1, true, time.Now()); !errors.Is(err, token.ErrReadOnly) {
		t.Fatalf("readOnly token used to write: %v", err)
	}

	// Unmap revokes: the next heartbeat carries the new generation, and the old token is refused.
	c.Do(0, "POST", "/vol/unmap", map[string]any{"volume_id": 1, "sdc_id": 2}, nil)
	var hb api.HeartbeatResponse
	if code, _, _ := c.Do(0, "POST", "/heartbeat", api.HeartbeatRequest{ID: "sds-1", IOVersion: rr.IO.Version}, &hb); code != 200 || hb.IO == nil {
		t.Fatalf("heartbeat after unmap: %d %+v", code, hb)
	}
	verifier = verifierFrom(t, hb.IO)
	if err := verifier.Verify(tok, 1, true, time.Now()); !errors.Is(err, token.ErrRevoked) {
		t.Fatalf("token after unmap: %v", err)
	}
	var hb2 api.HeartbeatResponse
	if code, _, _ := c.Do(0, "POST", "/heartbeat", api.HeartbeatRequest{ID: "sds-1", IOVersion: hb.IO.Version}, &hb2); code != 200 || hb2.IO != nil {
		t.Fatalf("heartbeat with current version carried IO state: %+v", hb2)
	}

	// Rotation: new tokens name the new key.
	var rot map[string]uint32
	c.Do(1, "POST", "/token/rotate", nil, &rot)
	c.Do(0, "POST", "/token/issue", api.TokenRequest{VolumeID: 1, SDCID: 1}, &tr)
	if rot["key_id"] != 2 || tr.KeyID != 2 {
		t.Fatalf("rotation: %+v %+v", rot, tr)
	}

	// ACK batches: a retried batch (same request id) counts once.
	ack := api.AckRequest{SDSID: rr.SDSID, Entries: []fsm.TokenAck{{TokenID: tr.TokenID, VolumeID: 1, SDCID: 1, WriteOps: 3, WriteBytes: 12288}}}
	for i := 0; i < 2; i++ {
		code, _, err := mdmtest.DoJSONWithHeaders(c.URL(i), "", "POST", "/token/ack", ack, nil, map[string]string{api.HeaderRequestID: "batch-1"})
		if err != nil || code != 200 {
			t.Fatalf("ack: %d %v", code, err)
		}
	}
	// A count beyond what an entry may hold is refused with a JSON error, and nothing of the
	// batch is entered.
	huge := api.AckRequest{SDSID: rr.SDSID, Entries: []fsm.TokenAck{ack.Entries[0], {TokenID: tr.TokenID, VolumeID: 1, SDCID: 1, ReadOps: 1, ReadBytes: fsm.MaxAckCount + 1}}}
	var ae api.Error
	if code, _, err := mdmtest.DoJSONWithHeaders(c.URL(0), "", "POST", "/token/ack", huge, &ae, map[string]string{api.HeaderRequestID: "batch-2"}); err != nil || code != http.StatusBadRequest || ae.Error == "" {
		t.Fatalf("ack of a huge count: %d %+v %v", code, ae, err)
	}
	var ledger api.Ledger
	if code, _, _ := c.Do(2, "GET", "/token/ledger?volume_id=1", nil, &ledger); code != 200 || ledger.Totals.WriteOps != 3 || ledger.Totals.ReadBytes != 0 || ledger.Totals.Tokens != 1 {
		t.Fatalf("ledger: %d %+v", code, ledger)
	}

	// Layout: one SDS is not enough for two copies; with two it is pinned once, stable after.
	var e api.Error
	if code, _, _ := c.Do(0, "GET", "/vol/1/layout", nil, &e); code != http.StatusConflict {
		t.Fatalf("layout with one SDS: %d %+v", code, e)
	}
	reg.ID, reg.DataAddr = "sds-2", "127.0.0.1:9702"
	c.Do(0, "POST", "/discovery/register", reg, nil)
	var l1, l2 layout.Layout
	if code, _, _ := c.Do(1, "GET", "/vol/1/layout", nil, &l1); code != 200 || len(l1.Members) != 2 || l1.Epoch != 1 {
		t.Fatalf("layout: %d %+v", code, l1)
	}
	c.Do(2, "GET", "/vol/1/layout", nil, &l2)
	if l2.Epoch != 1 || l2.Replicas(5)[0] != l1.Replicas(5)[0] || l1.SizeBytes != 8<<30 || l1.Members[0].Addr == "" {
		t.Fatalf("layout not stable: %+v %+v", l1, l2)
	}
}
