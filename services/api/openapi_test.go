package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/silence"
)

// openAPI is the part of an OpenAPI 3 document the tests read.
type openAPI struct {
	OpenAPI string                                 `json:"openapi"`
	Paths   map[string]map[string]openAPIOperation `json:"paths"`
}

type openAPIOperation struct {
	OperationID string            `json:"operationId"`
	Parameters  []json.RawMessage `json:"parameters"`
	Responses   map[string]any    `json:"responses"`
}

func loadOpenAPI(t *testing.T, b []byte) (openAPI, map[string]any) {
	t.Helper()
	var doc openAPI
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	return doc, raw
}

// routeKey is "METHOD /path" with the path as OpenAPI writes it.
func routeKey(pattern string) string {
	method, path, _ := cutMethod(pattern)
	return method + " " + strings.TrimSuffix(path, "{$}")
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// TestOpenAPIMatchesRoutes holds openapi.json to the routing table: every
// route is documented, every documented operation is a route, and each
// one answers on the running service (not 404 or 405) with the path's
// parameters filled in with a device and a job that exist.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	h.report(t, "sensor", "d1", "1.0", events.StatusCompleted, 10, t0)
	seq := h.desire(t, "sensor", "d1", "job1", 1, "2.0", t0.Add(time.Minute))
	h.waitShadow(t, seq)
	// A silence for DELETE /api/v1/silences/{id}.
	sil, err := silence.CreatedEvent(events.SilenceData{ID: "s1", Matchers: []string{`job="job1"`}, StartsAt: t0,
		EndsAt: time.Now().Add(time.Hour), CreatedBy: "test"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, events.SilenceSubject(events.SilenceCreated), sil)

	// Served, not only embedded.
	status, b := h.do(t, http.MethodGet, "/api/v1/openapi.json", "", http.Header{"Authorization": {""}})
	if status != http.StatusOK {
		t.Fatalf("GET /api/v1/openapi.json without a token: status %d, want 200", status)
	}
	doc, raw := loadOpenAPI(t, b)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q, want 3.x", doc.OpenAPI)
	}

	documented := map[string]bool{}
	ids := map[string]string{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			key := strings.ToUpper(method) + " " + path
			documented[key] = true
			if op.OperationID == "" || len(op.Responses) == 0 {
				t.Errorf("%s: no operationId or no responses", key)
			}
			if other, dup := ids[op.OperationID]; dup {
				t.Errorf("%s and %s share the operationId %q", key, other, op.OperationID)
			}
			ids[op.OperationID] = key
			checkPathParams(t, raw, key, path, op)
		}
	}
	routed := map[string]bool{}
	for _, rt := range h.svc.routes() {
		routed[routeKey(rt.pattern)] = true
		if !documented[routeKey(rt.pattern)] {
			t.Errorf("route %s is not in openapi.json", rt.pattern)
		}
	}
	var keys []string
	for k := range documented {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if !routed[key] {
			t.Errorf("openapi.json documents %s, which is not a route", key)
		}
		t.Run(key, func(t *testing.T) {
			method, path, _ := strings.Cut(key, " ")
			path = strings.NewReplacer("{typeId}", "sensor", "{deviceId}", "d1", "{job}", "job1", "{cmd}", "pause", "{id}", "s1").Replace(path)
			if strings.HasSuffix(path, "/api/v1/events") {
				path += "?subject=alert.>"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, method, h.base+path, nil)
			req.Header.Set("Authorization", "Bearer "+opToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			// Streams answer their status and headers at once; the body is
			// not read.
			defer resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
				t.Fatalf("%s %s: status %d: %s", method, path, resp.StatusCode, b)
			}
		})
	}
	checkRefs(t, raw, raw, "")
}

// checkPathParams checks an operation declares exactly its path's
// {parameters}, directly or by $ref.
func checkPathParams(t *testing.T, raw map[string]any, key, path string, op openAPIOperation) {
	t.Helper()
	var want, got []string
	for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
		want = append(want, m[1])
	}
	for _, p := range op.Parameters {
		var param struct {
			Ref  string `json:"$ref"`
			Name string `json:"name"`
			In   string `json:"in"`
		}
		_ = json.Unmarshal(p, &param)
		if param.Ref != "" {
			b, _ := json.Marshal(resolve(raw, param.Ref))
			_ = json.Unmarshal(b, &param)
		}
		if param.In == "path" {
			got = append(got, param.Name)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		t.Errorf("%s: path parameters %v declared, the path has %v", key, got, want)
	}
}

// resolve follows a local $ref ("#/components/schemas/X"); nil when it
// leads nowhere.
func resolve(raw map[string]any, ref string) any {
	var cur any = raw
	for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

// checkRefs fails for every $ref in v that leads nowhere.
func checkRefs(t *testing.T, root map[string]any, v any, at string) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && k == "$ref" {
				if !strings.HasPrefix(s, "#/") || resolve(root, s) == nil {
					t.Errorf("%s: $ref %q leads nowhere", at, s)
				}
				continue
			}
			checkRefs(t, root, e, at+"/"+k)
		}
	case []any:
		for _, e := range x {
			checkRefs(t, root, e, at)
		}
	}
}

// TestOpenAPIAtParameter holds the document to the handlers on ?at=: every
// GET that answers a malformed at with a 400 naming it declares the
// parameter, and every GET that declares it does so answer.
func TestOpenAPIAtParameter(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	h.report(t, "sensor", "d1", "1.0", events.StatusCompleted, 10, t0)
	_, b := h.do(t, http.MethodGet, "/api/v1/openapi.json", "", nil)
	doc, raw := loadOpenAPI(t, b)
	declares := func(op openAPIOperation) bool {
		for _, p := range op.Parameters {
			var param struct {
				Ref  string `json:"$ref"`
				Name string `json:"name"`
				In   string `json:"in"`
			}
			_ = json.Unmarshal(p, &param)
			if param.Ref != "" {
				b, _ := json.Marshal(resolve(raw, param.Ref))
				_ = json.Unmarshal(b, &param)
			}
			if param.Name == "at" && param.In == "query" {
				return true
			}
		}
		return false
	}
	accepting := 0
	for _, rt := range h.svc.routes() {
		method, path, _ := cutMethod(rt.pattern)
		if method != http.MethodGet || rt.stream {
			continue
		}
		key := routeKey(rt.pattern)
		_, docPath, _ := strings.Cut(key, " ")
		declared := declares(doc.Paths[docPath]["get"])
		path = strings.NewReplacer("{typeId}", "sensor", "{deviceId}", "d1", "{job}", "job1", "{id}", "s1", "{$}", "").Replace(path)
		status, body := h.do(t, http.MethodGet, path+"?at=junk", "", nil)
		answers := status == http.StatusBadRequest && strings.Contains(string(body), `at \"junk\"`)
		if answers != declared {
			t.Errorf("%s: ?at=junk answers %d %s; the document declares at: %v", key, status, body, declared)
		}
		if answers {
			accepting++
		}
	}
	if accepting == 0 {
		t.Error("no route answers ?at=")
	}
}
