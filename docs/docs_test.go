package docs

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestLoadAndJSON(t *testing.T) {
	doc, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPIMajorMinor() != "3.1" {
		t.Errorf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	data, err := OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(data, &v); err != nil || v.OpenAPI != doc.OpenAPI || len(v.Paths) != doc.Paths.Len() {
		t.Errorf("OpenAPIJSON = openapi %q, %d paths, %v; want %q and %d paths", v.OpenAPI, len(v.Paths), err, doc.OpenAPI, doc.Paths.Len())
	}
}

// mdLink is a relative link of a Markdown file: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^)#:\s]+)(#[^)]*)?\)`)

// TestLinksStayInTheRepository: the documentation links only to files of
// the repository, and each such link resolves.
func TestLinksStayInTheRepository(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	outside := "../" + "shared" // the old home of the API contract
	checked := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == ".git" || name == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		ext := filepath.Ext(p)
		if ext != ".md" && ext != ".go" && ext != ".yaml" && ext != ".sh" && d.Name() != "Makefile" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.Contains(string(data), outside) {
			t.Errorf("%s refers to %s, outside the repository", rel, outside)
		}
		if ext != ".md" {
			return nil
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(data), -1) {
			target := filepath.Join(filepath.Dir(p), m[1])
			checked++
			if !strings.HasPrefix(target, root+string(filepath.Separator)) && target != root {
				t.Errorf("%s links to %s, outside the repository", rel, m[1])
			} else if _, err := os.Stat(target); err != nil {
				t.Errorf("%s links to %s, which does not exist", rel, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Error("found no relative link in the Markdown files")
	}
}
