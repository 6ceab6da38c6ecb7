package rules

import (
	"embed"
	"io/fs"
)

// defaultFiles are the default rules and their tests, built into the
// binary so `otawatch run` alerts without a rules directory.
//
//go:embed *.yaml
var defaultFiles embed.FS

// DefaultsName is how messages name the built-in rules' directory.
const DefaultsName = "rules"

// Defaults returns the built-in rule files and their tests files (at the
// root of the FS).
func Defaults() fs.FS { return defaultFiles }

// LoadDefaults loads the built-in rules.
func LoadDefaults() (*Set, error) { return LoadFS(defaultFiles, ".", DefaultsName) }
