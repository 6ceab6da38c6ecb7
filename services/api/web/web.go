// Package web holds the dashboard's assets, embedded in the binary: one
// HTML page with its styles and script inline, no build step and nothing
// loaded from another origin (the machines it runs on may have no internet).
// The page follows the api service's WebSocket (/api/v1/ws) and redraws on
// every snapshot it receives; for an operator's token it also sends rollout
// commands to /api/v1/rollouts. Its charts are SVG drawn by its own script.
package web

import "embed"

// FS holds index.html.
//
//go:embed index.html
var FS embed.FS
