package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/events"
)

// POST, GET and DELETE /api/v1/silences record silences on NOTIFY, with
// the token's name as the author.
func TestSilencesAPI(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	ro := http.Header{"Authorization": {"Bearer " + roToken}}

	tests := []struct {
		name   string
		body   string
		hdr    http.Header
		status int
		errHas string
	}{
		{"read-only may not", `{"matchers":["job=\"j1\""]}`, ro, http.StatusForbidden, ""},
		{"no author from the body", `{"matchers":["job=\"j1\""],"createdBy":"mallory"}`, nil, http.StatusBadRequest, `unknown field "createdBy"`},
		{"bad matcher", `{"matchers":["rule=~\"(x\""]}`, nil, http.StatusBadRequest, "missing closing )"},
		{"no matcher", `{}`, nil, http.StatusBadRequest, "at least one matcher"},
		{"both ends", `{"matchers":["job=\"j1\""],"duration":"1h","endsAt":"2030-01-01T00:00:00Z"}`, nil, http.StatusBadRequest, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, b := h.do(t, http.MethodPost, "/api/v1/silences", tt.body, tt.hdr)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, b)
			}
			if tt.errHas != "" && !strings.Contains(errorOf(t, b), tt.errHas) {
				t.Fatalf("error %q lacks %q", errorOf(t, b), tt.errHas)
			}
		})
	}
	if n := h.js.Count(t, events.StreamNotify); n != 0 {
		t.Fatalf("refused requests left %d events on NOTIFY", n)
	}

	status, b := h.do(t, http.MethodPost, "/api/v1/silences", `{"matchers":["job=\"j1\"","severity=~\"warning|info\""],"duration":"2h","comment":"maintenance"}`, nil)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, b)
	}
	var created silenceView
	if err := json.Unmarshal(b, &created); err != nil {
		t.Fatal(err)
	}
	if created.CreatedBy != "alice" || created.State != "active" || created.EndsAt.Sub(created.StartsAt).Hours() != 2 || created.Comment != "maintenance" {
		t.Fatalf("created %+v, want alice's, active, 2h", created)
	}

	var list []silenceView
	h.getJSON(t, "/api/v1/silences", http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != created.ID {
		t.Fatalf("list %+v, want the created silence", list)
	}

	if status, b := h.do(t, http.MethodDelete, "/api/v1/silences/"+created.ID, "", nil); status != http.StatusOK || !strings.Contains(string(b), `"state":"expired"`) {
		t.Fatalf("expire: %d %s", status, b)
	}
	h.getJSON(t, "/api/v1/silences", http.StatusOK, &list)
	if len(list) != 0 {
		t.Fatalf("list after expiry %+v, want none", list)
	}
	h.getJSON(t, "/api/v1/silences?all=true", http.StatusOK, &list)
	if len(list) != 1 || list[0].State != "expired" || list[0].ExpiredBy != "alice" {
		t.Fatalf("list ?all=true %+v, want the expired silence", list)
	}
	if status, _ := h.do(t, http.MethodDelete, "/api/v1/silences/"+created.ID, "", nil); status != http.StatusConflict {
		t.Fatalf("expire twice: %d, want 409", status)
	}
	if status, _ := h.do(t, http.MethodDelete, "/api/v1/silences/nope", "", nil); status != http.StatusNotFound {
		t.Fatalf("expire unknown: %d, want 404", status)
	}
	if n := h.js.Count(t, events.StreamNotify); n != 2 {
		t.Fatalf("NOTIFY holds %d events, want created and expired", n)
	}
}
