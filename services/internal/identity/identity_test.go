package identity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// mosquittoLine is a password_file line as mosquitto_passwd 2.0 writes it:
// 12-byte salt (16 base64 characters), 64-byte hash (88).
var mosquittoLine = regexp.MustCompile(`^([^:]+):\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$`)

// TestMosquittoHashFormat: our hashes have mosquitto_passwd's shape, and
// VerifyMosquittoHash accepts what the real mosquitto_passwd wrote, so the
// two compute the same function. (That Mosquitto accepts ours is shown on a
// running broker in services/bridge's auth tests.)
func TestMosquittoHashFormat(t *testing.T) {
	h, err := MosquittoHash("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if !mosquittoLine.MatchString("d-1:" + h) {
		t.Errorf("hash %q does not look like mosquitto_passwd's", h)
	}
	for _, tt := range []struct {
		name, pw string
		want     bool
	}{{"right", "s3cret", true}, {"wrong", "s3cret!", false}, {"empty", "", false}} {
		t.Run(tt.name, func(t *testing.T) {
			if ok, err := VerifyMosquittoHash(h, tt.pw); err != nil || ok != tt.want {
				t.Errorf("verify %q: %v, %v; want %v", tt.pw, ok, err, tt.want)
			}
		})
	}
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("mosquitto_passwd not installed")
	}
	file := filepath.Join(t.TempDir(), "pw")
	if out, err := exec.Command(bin, "-c", "-b", file, "d-1", "pass word").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(b))
	if !mosquittoLine.MatchString(line) {
		t.Fatalf("mosquitto_passwd wrote %q, not the format we write", line)
	}
	theirs := strings.TrimPrefix(line, "d-1:")
	if ok, err := VerifyMosquittoHash(theirs, "pass word"); err != nil || !ok {
		t.Errorf("mosquitto_passwd's hash does not verify: %v, %v", ok, err)
	}
	if ok, _ := VerifyMosquittoHash(theirs, "pass-word"); ok {
		t.Error("mosquitto_passwd's hash verifies a wrong password")
	}
}

func TestEdits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "devices.json")
	if devs, err := List(path); err != nil || len(devs) != 0 {
		t.Fatalf("missing file: %v, %v; want an empty registry", devs, err)
	}
	if err := Add(path, "d-1", "pw-one", MinCost); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		do      func() error
		wantErr string
		is      error
	}{
		{"add again", func() error { return Add(path, "d-1", "other", MinCost) }, "already registered", ErrExists},
		{"bad id", func() error { return Add(path, "d 1", "pw", MinCost) }, "has a space at byte 1", nil},
		{"wildcard id", func() error { return Add(path, "d+", "pw", MinCost) }, `has '+'`, nil},
		{"reserved id", func() error { return Add(path, "otawatch-rollout", "pw", MinCost) }, "reserved", nil},
		{"empty password", func() error { return Add(path, "d-2", "", MinCost) }, "password is empty", nil},
		{"long password", func() error { return Add(path, "d-2", strings.Repeat("x", 73), MinCost) }, "limit is 72", nil},
		{"cost", func() error { return Add(path, "d-2", "pw", 3) }, "cost 3 is out of range 4..14", nil},
		{"remove unknown", func() error { return Remove(path, "d-9") }, "not registered", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
	if err := Replace(path, "d-1", "pw-two", MinCost); err != nil {
		t.Fatal(err)
	}
	if err := Replace(path, "d-2", "pw-2", MinCost); err != nil {
		t.Fatal(err)
	}
	devs, err := List(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].ID != "d-1" || devs[1].ID != "d-2" {
		t.Fatalf("list: %+v", devs)
	}
	if bcrypt.CompareHashAndPassword([]byte(devs[0].Bcrypt), []byte("pw-two")) != nil {
		t.Error("replace did not change d-1's bcrypt hash")
	}
	if ok, _ := VerifyMosquittoHash(devs[0].Mosquitto, "pw-two"); !ok {
		t.Error("replace did not change d-1's mosquitto hash")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("registry mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("pw-two")) {
		t.Error("the registry holds a password in clear")
	}
	if err := Remove(path, "d-1"); err != nil {
		t.Fatal(err)
	}
	if devs, _ := List(path); len(devs) != 1 || devs[0].ID != "d-2" {
		t.Errorf("after remove: %+v", devs)
	}
}

func TestReadCredentials(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Credential
		wantErr string
	}{
		{"space", "d-1 pw1\n", []Credential{{"d-1", "pw1"}}, ""},
		{"csv, comments, blank, CRLF", "# fleet\n\nd-1,pw1\r\nd-2\tpass word \n", []Credential{{"d-1", "pw1"}, {"d-2", "pass word"}}, ""},
		{"no password", "d-1\n", nil, "line 1: \"d-1\" has no password"},
		{"empty password", "d-1 ok\nd-2,  \n", nil, "line 2: device \"d-2\": password is empty"},
		{"bad id", "ok-1 a\nd/1 b\n", nil, "line 2: device id \"d/1\" has '/'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadCredentials(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("credential %d: %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestImport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.json")
	if err := Add(path, "d-001", "old", MinCost); err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&in, "d-%03d pw-%d\n", i, i)
	}
	var calls, last atomic.Int64
	st, err := Import(path, strings.NewReader(in.String()), MinCost, func(done int) { calls.Add(1); last.Store(int64(done)) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Added != 39 || st.Replaced != 1 {
		t.Errorf("stats %+v, want 39 added, 1 replaced", st)
	}
	if calls.Load() != 40 || last.Load() != 40 {
		t.Errorf("progress called %d times, last %d; want 40, 40", calls.Load(), last.Load())
	}
	reg, err := LoadRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reg.Check("d-001", "pw-1") || reg.Check("d-001", "old") || !reg.Check("d-040", "pw-40") {
		t.Error("imported passwords do not check")
	}
	// A bad line anywhere: nothing is written.
	before, _ := os.ReadFile(path)
	if _, err := Import(path, strings.NewReader("d-100 a\nd-101\n"), MinCost, nil); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("import of a bad file: %v, want a line 2 error", err)
	}
	if _, err := Import(path, strings.NewReader("d-100 a\nd-100 b\n"), MinCost, nil); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("import of a duplicate id: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a failed import changed the registry")
	}
}

func TestDerivePassword(t *testing.T) {
	// A fixed vector (printf d-00001 | openssl dgst -sha256 -hmac demo-secret):
	// the simulator and "devices import" must agree with each other and
	// across releases.
	const want = "de91a6e40514b79d2e3a8b761bbd7d9848058f8999f4c9cbaf893a5a6072a421"
	if got := DerivePassword([]byte("demo-secret"), "d-00001"); got != want {
		t.Errorf("derived %q, want %q", got, want)
	}
}

// TestCheckCache: a successful check is remembered, and the memory does
// not outlive the password: once the device's hash changes, the old
// password fails although it was remembered.
func TestCheckCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.json")
	if err := Add(path, "d-1", "first", MinCost); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Check("d-1", "first") || s.registry().cached() != 1 {
		t.Fatalf("check of the right password: cached %d", s.registry().cached())
	}
	if s.Check("d-1", "wrong") || s.Check("d-2", "first") || s.Check("d-1", "") {
		t.Error("a wrong password, an unknown id or an empty password passed")
	}
	if !s.Check("d-1", "first") {
		t.Error("the remembered password failed")
	}
	if err := Replace(path, "d-1", "second", MinCost); err != nil {
		t.Fatal(err)
	}
	removed, err := s.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != "d-1" {
		t.Errorf("removed %v, want [d-1] (a new password revokes the old)", removed)
	}
	if s.Check("d-1", "first") {
		t.Error("the old password still passes after the device's password changed")
	}
	if !s.Check("d-1", "second") {
		t.Error("the new password fails")
	}
}

// TestStoreFollowsFile: edits to the file take effect on a running store
// without a call: added devices check, removed ones do not, OnChange hears
// of removals, and a broken file leaves the registry in force.
func TestStoreFollowsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.json")
	s, err := OpenStore(path, nil)
	if err != nil {
		t.Fatalf("open a missing registry: %v", err)
	}
	defer s.Close()
	if s.Has("d-1") || s.Len() != 0 {
		t.Fatal("a missing file is not an empty registry")
	}
	got := make(chan []string, 4)
	s.OnChange(func(removed []string) { got <- removed })
	if err := Add(path, "d-1", "pw1", MinCost); err != nil {
		t.Fatal(err)
	}
	if err := Add(path, "d-2", "pw2", MinCost); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return s.Has("d-1") && s.Has("d-2") }, "added devices never appeared")
	if !s.Check("d-2", "pw2") {
		t.Error("an added device's password fails")
	}
	if err := Remove(path, "d-1"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if len(r) != 1 || r[0] != "d-1" {
			t.Errorf("OnChange got %v, want [d-1]", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("OnChange never heard of the removal")
	}
	if s.Has("d-1") || s.Check("d-1", "pw1") {
		t.Error("a removed device still checks")
	}
	// A broken file: the registry in force stays.
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reload(); err == nil {
		t.Error("reload of a broken file succeeded")
	}
	if !s.Check("d-2", "pw2") {
		t.Error("a broken file took the registry in force away")
	}
}

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
