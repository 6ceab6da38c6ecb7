package api

import (
	"encoding/base64"
	"net/http"
	"strings"
)

// whoami is the answer of GET /api/v1/whoami.
type whoami struct {
	// Name is the token's name (the actor recorded on the rollout events
	// the caller's commands write), "anonymous" without tokens.
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Operator says whether the caller may create and drive rollouts: the
	// dashboard offers its controls only then.
	Operator bool `json:"operator"`
}

// handleWhoami answers who the caller's token says they are, so the
// dashboard knows whether to offer the controls. It is not what guards
// them: every POST checks the role itself.
func (s *Service) handleWhoami(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	writeJSON(w, http.StatusOK, whoami{Name: p.Name, Role: p.Role, Operator: p.Role.allows(RoleOperator)})
}

// The dashboard's WebSocket carries its token in a subprotocol, because a
// browser's WebSocket cannot set an Authorization header and a token in the
// URL ends up in access logs and proxies' logs. The page offers two
// subprotocols: wsProtocol, which the server selects, and wsTokenPrefix
// followed by the token in unpadded base64url (a subprotocol must be an
// HTTP token; base64url's alphabet is), which the server reads and never
// echoes.
const (
	wsProtocol    = "otawatch.v1"
	wsTokenPrefix = "otawatch.token."
)

// wsToken returns the token a WebSocket handshake carries in its
// subprotocols, or "" when none does (or it is not valid base64url).
func wsToken(r *http.Request) string {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), wsTokenPrefix); ok {
				b, err := base64.RawURLEncoding.DecodeString(v)
				if err != nil {
					return ""
				}
				return string(b)
			}
		}
	}
	return ""
}
