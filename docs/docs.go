// Package docs holds codeexec's HTTP API contract, openapi.yaml (OpenAPI
// 3.1), embedded so that the server can serve it as GET /openapi.json.
// The tests of internal/server validate every request and response they
// make against it.
package docs

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
)

// OpenAPIYAML is the contract as written, docs/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte

// Load parses and validates the contract; each call returns a document of
// its own.
func Load() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPIYAML)
	if err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("docs/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	return doc, nil
}

// OpenAPIJSON returns the contract converted to JSON, computed once.
var OpenAPIJSON = sync.OnceValues(func() ([]byte, error) {
	doc, err := Load()
	if err != nil {
		return nil, err
	}
	return json.Marshal(doc)
})
