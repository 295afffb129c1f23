package search

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"codeexec/internal/toolloop"
)

func TestSearXNG(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/search" || r.URL.Query().Get("format") != "json" || r.URL.Query().Get("q") != "go language" {
			http.Error(w, "bad request "+r.URL.String(), 400)
			return
		}
		w.Write([]byte(`{"results":[{"title":"Go","url":"https://go.dev/","content":"The Go language"},{"title":"B","url":"u2","content":"c2"},{"title":"C","url":"u3"}]}`))
	}))
	defer srv.Close()
	s := &SearXNG{BaseURL: srv.URL + "/", MaxResults: 2}
	got, err := s.Search(context.Background(), "go language")
	if err != nil {
		t.Fatal(err)
	}
	want := []toolloop.SearchResult{{Title: "Go", URL: "https://go.dev/", Snippet: "The Go language"}, {Title: "B", URL: "u2", Snippet: "c2"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Search (-want +got):\n%s", diff)
	}
	if _, err := s.Search(context.Background(), "other"); err == nil {
		t.Error("Search of a failing instance: no error")
	}
}
