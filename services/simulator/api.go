package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
)

// apiClient asks otawatch's HTTP API for a device's shadow delta, as a
// device coming back online does.
type apiClient struct {
	base  string
	token string
	http  *http.Client
	// slots bounds lookups in flight: a broker restart brings a whole
	// fleet back at once.
	slots chan struct{}
}

func newAPIClient(base, token string) *apiClient {
	return &apiClient{
		base:  strings.TrimRight(base, "/"),
		token: token,
		http:  &http.Client{Timeout: 10 * time.Second},
		slots: make(chan struct{}, 16),
	}
}

// DeltaPath is the seed system's shadow delta endpoint of a device.
func DeltaPath(typeID, deviceID string) string {
	return "/api/v0002/device/types/" + url.PathEscape(typeID) + "/devices/" + url.PathEscape(deviceID) + "/shadow/delta"
}

// delta fetches a device's shadow delta; an empty state means in sync.
func (a *apiClient) delta(ctx context.Context, typeID, deviceID string) (events.ShadowDelta, error) {
	var d events.ShadowDelta
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	case <-ctx.Done():
		return d, ctx.Err()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+DeltaPath(typeID, deviceID), nil)
	if err != nil {
		return d, fmt.Errorf("shadow delta request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return d, fmt.Errorf("get shadow delta: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return d, fmt.Errorf("read shadow delta: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return d, fmt.Errorf("get shadow delta: %s: %.200s", resp.Status, body)
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return d, fmt.Errorf("decode shadow delta: %w", err)
	}
	return d, nil
}
