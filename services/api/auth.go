package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/otawatch/otawatch/services/internal/ops"
)

// Role is what a token may do.
type Role string

// Roles. An operator may do everything a read-only caller may.
const (
	// RoleReadOnly reads devices, fleet metrics, rollouts and alerts, and
	// follows the event streams.
	RoleReadOnly Role = "read-only"
	// RoleOperator also creates and drives rollouts (every POST).
	RoleOperator Role = "operator"
)

// allows reports whether a caller with role r may act as need.
func (r Role) allows(need Role) bool {
	switch need {
	case RoleReadOnly:
		return r == RoleReadOnly || r == RoleOperator
	case RoleOperator:
		return r == RoleOperator
	}
	return false
}

// MinTokenLen is the shortest token accepted: shorter ones are guessable.
const MinTokenLen = 16

// Token is one API token of a tokens file.
type Token struct {
	Role Role
	// Name identifies the holder in logs and in the actor header sent to
	// the rollout service; it defaults to "ROLE@LINE". The token itself is
	// never logged.
	Name string
	// digest is the SHA-256 of the secret: comparisons run on equal-length
	// digests in constant time.
	digest [sha256.Size]byte
}

// ParseTokens parses a tokens file: one token per line, "ROLE TOKEN
// [NAME]", fields separated by spaces or tabs; blank lines and lines
// starting with # are skipped. ROLE is read-only or operator; TOKEN is at
// least MinTokenLen characters. Every problem is reported, as file:line,
// without echoing a secret.
func ParseTokens(file string, r io.Reader) ([]Token, error) {
	var (
		out  []Token
		errs []error
		seen = map[[sha256.Size]byte]int{}
	)
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...)))
		}
		if len(fields) < 2 || len(fields) > 3 {
			bad("want \"ROLE TOKEN [NAME]\", got %d fields", len(fields))
			continue
		}
		role := Role(fields[0])
		if role != RoleReadOnly && role != RoleOperator {
			bad("role %q is not %s or %s", fields[0], RoleReadOnly, RoleOperator)
			continue
		}
		if len(fields[1]) < MinTokenLen {
			bad("token is %d characters long, the minimum is %d", len(fields[1]), MinTokenLen)
			continue
		}
		t := Token{Role: role, Name: fmt.Sprintf("%s@%d", role, line), digest: sha256.Sum256([]byte(fields[1]))}
		if len(fields) == 3 {
			t.Name = fields[2]
		}
		if first, dup := seen[t.digest]; dup {
			bad("the same token as line %d", first)
			continue
		}
		seen[t.digest] = line
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", file, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no tokens (an empty file would lock everyone out; leave tokens_file unset on loopback instead)", file)
	}
	return out, nil
}

// principal is the caller of a request.
type principal struct {
	Name string
	Role Role
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// authenticator checks a request's credentials against the tokens.
type authenticator struct {
	tokens []Token
	// anonymous: no tokens configured (loopback only): every caller is an
	// operator.
	anonymous bool
}

// errNoCredentials and errBadCredentials are the two 401 cases.
var (
	errNoCredentials  = errors.New("this API needs a token: send Authorization: Bearer TOKEN")
	errBadCredentials = errors.New("the token is not valid")
)

// identify returns the caller of r. A token comes from "Authorization:
// Bearer TOKEN", from HTTP Basic auth (the password; the seed's clients send
// their API key that way) or, for GET only, from the access_token query
// parameter, because a browser's EventSource and WebSocket cannot set
// headers, or from a WebSocket handshake's subprotocol (wsToken), which
// keeps it out of the URL.
func (a *authenticator) identify(r *http.Request) (principal, error) {
	if a.anonymous {
		return principal{Name: "anonymous", Role: RoleOperator}, nil
	}
	secret := ""
	if h := r.Header.Get("Authorization"); h != "" {
		if v, ok := strings.CutPrefix(h, "Bearer "); ok {
			secret = strings.TrimSpace(v)
		} else if _, pw, ok := r.BasicAuth(); ok {
			secret = pw
		} else {
			return principal{}, errBadCredentials
		}
	} else if r.Method == http.MethodGet {
		secret = r.URL.Query().Get("access_token")
		if secret == "" {
			secret = wsToken(r)
		}
	}
	if secret == "" {
		return principal{}, errNoCredentials
	}
	d := sha256.Sum256([]byte(secret))
	var found *Token
	for i := range a.tokens {
		// Compare against every token, so timing says nothing about which
		// one matched or how many there are before it.
		if subtle.ConstantTimeCompare(d[:], a.tokens[i].digest[:]) == 1 {
			found = &a.tokens[i]
		}
	}
	if found == nil {
		return principal{}, errBadCredentials
	}
	return principal{Name: found.Name, Role: found.Role}, nil
}

// require wraps h so that it runs only for a caller with role need: 401
// without valid credentials, 403 with a role that is not enough.
func (a *authenticator) require(need Role, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.identify(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="otawatch"`)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		ops.SetCaller(r.Context(), p.Name) // the access log names the token, never shows it
		if !p.Role.allows(need) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("token %q has role %s; this needs %s", p.Name, p.Role, need))
			return
		}
		h.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}
