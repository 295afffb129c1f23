// Package search holds web search providers for the web_search tool.
package search

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"codeexec/internal/toolloop"
)

// SearXNG queries a SearXNG instance's JSON API (GET /search?format=json;
// the instance must list "json" in search.formats of its settings.yml).
type SearXNG struct {
	// BaseURL is the instance, e.g. http://127.0.0.1:8888.
	BaseURL string
	// MaxResults caps the results returned (default 8).
	MaxResults int
	// Client is the HTTP client (default: 15 s timeout).
	Client *http.Client
}

// Search implements toolloop.Searcher.
func (s *SearXNG) Search(ctx context.Context, query string) ([]toolloop.SearchResult, error) {
	u, err := url.Parse(strings.TrimRight(s.BaseURL, "/") + "/search")
	if err != nil {
		return nil, fmt.Errorf("searxng url: %w", err)
	}
	u.RawQuery = url.Values{"q": {query}, "format": {"json"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("searxng: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("searxng answered %s", resp.Status)
	}
	var body struct {
		Results []struct {
			Title   string `json:"title"`
			URL     string `json:"url"`
			Content string `json:"content"`
		} `json:"results"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("searxng answer: %w", err)
	}
	max := s.MaxResults
	if max <= 0 {
		max = 8
	}
	var out []toolloop.SearchResult
	for _, r := range body.Results {
		if len(out) == max {
			break
		}
		out = append(out, toolloop.SearchResult{Title: r.Title, URL: r.URL, Snippet: r.Content})
	}
	return out, nil
}
