// Package openapi holds the gateway's OpenAPI 3.1 description of the
// native API and the three dialects (openapi.yaml, kept beside this file)
// and serves it as JSON at /openapi.json. The router's tests validate real
// requests and answers against it, so the document and the code cannot
// drift apart.
package openapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"go.yaml.in/yaml/v3"
)

// spec is the document as it is kept in the repository.
//
//go:embed openapi.yaml
var spec []byte

// JSON returns the document converted to JSON, with YAML anchors and
// merge keys expanded.
func JSON() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(spec, &doc); err != nil {
		return nil, fmt.Errorf("openapi: parse openapi.yaml: %w", err)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi: encode as JSON: %w", err)
	}
	return out, nil
}

// Handler serves the document as application/json. The document is
// converted once; an error means openapi.yaml is broken, which the
// package's tests catch before any build ships.
func Handler() (http.Handler, error) {
	doc, err := JSON()
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(doc)
	}), nil
}
