package api

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
)

func TestAuthRoles(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	basic := func(tok string) http.Header {
		return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("a-key:"+tok))}}
	}
	h.token = "" // each case says what it sends
	tests := []struct {
		name         string
		method, path string
		hdr          http.Header
		want         int
	}{
		{"no token", http.MethodGet, "/api/v1/fleet", nil, http.StatusUnauthorized},
		{"no token on sse", http.MethodGet, sseBase, nil, http.StatusUnauthorized},
		{"no token on delta", http.MethodGet, "/api/v0002/device/types/t/devices/d/shadow/delta", nil, http.StatusUnauthorized},
		{"no token on websocket", http.MethodGet, "/api/v1/ws", nil, http.StatusUnauthorized},
		{"unknown token", http.MethodGet, "/api/v1/fleet", bearer("not-a-real-token-at-all"), http.StatusUnauthorized},
		{"other scheme", http.MethodGet, "/api/v1/fleet", http.Header{"Authorization": {"Token " + roToken}}, http.StatusUnauthorized},
		{"read-only reads", http.MethodGet, "/api/v1/fleet", bearer(roToken), http.StatusOK},
		{"read-only via basic auth", http.MethodGet, "/api/v1/fleet", basic(roToken), http.StatusOK},
		{"read-only via query on GET", http.MethodGet, "/api/v1/fleet?access_token=" + roToken, nil, http.StatusOK},
		{"read-only refused on POST", http.MethodPost, "/api/v1/rollouts", bearer(roToken), http.StatusForbidden},
		{"read-only refused on a command", http.MethodPost, "/api/v1/rollouts/job1/pause", bearer(roToken), http.StatusForbidden},
		{"no token on POST", http.MethodPost, "/api/v1/rollouts", nil, http.StatusUnauthorized},
		{"query token not taken on POST", http.MethodPost, "/api/v1/rollouts?access_token=" + opToken, nil, http.StatusUnauthorized},
		// 503: past auth, to a rollout service that is not running.
		{"operator posts", http.MethodPost, "/api/v1/rollouts", bearer(opToken), http.StatusServiceUnavailable},
		{"operator via basic", http.MethodPost, "/api/v1/rollouts/job1/abort", basic(opToken), http.StatusServiceUnavailable},
		{"operator reads", http.MethodGet, "/api/v1/devices", bearer(opToken), http.StatusOK},
		{"healthz is open", http.MethodGet, "/healthz", nil, http.StatusOK},
		{"metrics are open", http.MethodGet, "/metrics", nil, http.StatusOK},
		{"the page is open", http.MethodGet, "/", nil, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, b := h.do(t, tt.method, tt.path, "", tt.hdr)
			if status != tt.want {
				t.Fatalf("status %d, want %d; body %s", status, tt.want, b)
			}
			if status == http.StatusUnauthorized || status == http.StatusForbidden {
				errorOf(t, b)
			}
		})
	}
}

func TestAnonymousOnLoopback(t *testing.T) {
	h := startAPI(t, harnessOpts{}) // no tokens file, 127.0.0.1
	status, b := h.do(t, http.MethodPost, "/api/v1/rollouts/job1/pause", "", nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("anonymous POST: status %d body %s, want 503 (past auth, no rollout service)", status, b)
	}
}

func TestParseTokens(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    []Token
		wantErr []string // substrings of the error
	}{
		{
			name: "roles, names and comments",
			file: "# comment\n\noperator 0123456789abcdef alice\n  read-only\tfedcba9876543210  \n",
			want: []Token{{Role: RoleOperator, Name: "alice"}, {Role: RoleReadOnly, Name: "read-only@4"}},
		},
		{
			name:    "every problem with its line, no secret echoed",
			file:    "admin 0123456789abcdef\noperator short\noperator\nread-only 0123456789abcdef x y\noperator 0123456789abcdef\nread-only 0123456789abcdef\n",
			wantErr: []string{"tokens:1: role \"admin\"", "tokens:2: token is 5 characters", "tokens:3: want", "tokens:4: want", "tokens:6: the same token as line 5"},
		},
		{name: "empty", file: "# nothing\n", wantErr: []string{"no tokens"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTokens("tokens", strings.NewReader(tt.file))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %v", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "0123456789abcdef") || strings.Contains(err.Error(), "short") {
					t.Errorf("error %q echoes a secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d tokens, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i].Role != tt.want[i].Role || got[i].Name != tt.want[i].Name {
					t.Errorf("token %d = %s %s, want %s %s", i, got[i].Role, got[i].Name, tt.want[i].Role, tt.want[i].Name)
				}
			}
		})
	}
}

func FuzzParseTokens(f *testing.F) {
	f.Add("operator 0123456789abcdef alice\n")
	f.Add("read-only fedcba9876543210\n# c\n")
	f.Add("x\n\n\toperator  \x00\n")
	f.Fuzz(func(t *testing.T, file string) {
		toks, err := ParseTokens("f", strings.NewReader(file))
		if err != nil {
			if len(toks) != 0 {
				t.Fatal("tokens returned with an error")
			}
			return
		}
		for _, tk := range toks {
			if tk.Role != RoleOperator && tk.Role != RoleReadOnly || tk.Name == "" {
				t.Fatalf("accepted %+v", tk)
			}
		}
	})
}

func TestConfigValidate(t *testing.T) {
	good := writeTokens(t)
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("root 0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // problem keys
	}{
		{"defaults", Config{}, nil},
		{"loopback without tokens", Config{Listen: "127.0.0.1:9999"}, nil},
		{"localhost without tokens", Config{Listen: "localhost:9999"}, nil},
		{"ipv6 loopback without tokens", Config{Listen: "[::1]:9999"}, nil},
		{"all interfaces without tokens", Config{Listen: ":8080"}, []string{"tokens_file"}},
		{"public address without tokens", Config{Listen: "0.0.0.0:8080"}, []string{"tokens_file"}},
		{"public address with tokens", Config{Listen: "0.0.0.0:8080", TokensFile: good}, nil},
		{"missing tokens file", Config{TokensFile: filepath.Join(t.TempDir(), "nope")}, []string{"tokens_file"}},
		{"bad tokens file", Config{TokensFile: bad}, []string{"tokens_file"}},
		{"bad listen and timeout", Config{Listen: "8080", ReadTimeout: -1}, []string{"listen", "read_timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.SetDefaults()
			p := conf.NewProblems()
			c.Validate(p)
			var got []string
			for _, pr := range p.List() {
				got = append(got, pr.Key)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("problems %v, want keys %v", p.List(), tt.want)
			}
		})
	}
}

func TestRunRefusesOpenPublicListen(t *testing.T) {
	// New refuses it (it validates the section); Run checks again.
	s, err := New(Config{Listen: "0.0.0.0:0"}, svc.Deps{})
	if err == nil {
		err = s.Run(t.Context())
	}
	if err == nil || !strings.Contains(err.Error(), "tokens_file") {
		t.Fatalf("Run on a public address without tokens: %v, want a refusal naming tokens_file", err)
	}
}
