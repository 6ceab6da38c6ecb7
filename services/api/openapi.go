package api

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3 description of every route the service
// serves, written by hand next to the handlers it describes.
// TestOpenAPIMatchesRoutes holds it to the routing table: every route is
// documented and every documented operation answers.
//
//go:embed openapi.json
var openAPIDoc []byte

// handleOpenAPI serves GET /api/v1/openapi.json. It needs no token: it
// describes the API and says nothing about the fleet, and client
// generators and API browsers fetch it before they hold one.
func handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(openAPIDoc)
}
