//go:build linux

package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"codeexec/internal/egress"
	"codeexec/internal/executor"
)

// TestMetricsDocumented keeps the metrics table of docs/configuration.md
// true: it lists every codeexec_* metric and, for each, exactly the label
// values the code exports. Label values are found two ways: every literal
// passed to WithLabelValues in the package's source (rejection reasons,
// file directions), and what the vectors hold after one execution of each
// status (statuses, limit kinds, egress outcomes).
func TestMetricsDocumented(t *testing.T) {
	code := map[string]map[string]bool{} // metric name -> label values
	add := func(name, value string) {
		if code[name] == nil {
			code[name] = map[string]bool{}
		}
		if value != "" {
			code[name][value] = true
		}
	}

	// The source: metric names, and the literal label values of each
	// field of metrics.
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	fieldName := map[string]string{} // field of metrics -> metric name
	var calls []*ast.CallExpr
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.KeyValueExpr:
				field, ok := n.Key.(*ast.Ident)
				if !ok {
					break
				}
				if lit, ok := n.Value.(*ast.BasicLit); ok && field.Name == "Name" {
					if s, _ := strconv.Unquote(lit.Value); strings.HasPrefix(s, "codeexec_") {
						add(s, "")
					}
					break
				}
				ast.Inspect(n.Value, func(m ast.Node) bool {
					if kv, ok := m.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
							if lit, ok := kv.Value.(*ast.BasicLit); ok {
								if s, _ := strconv.Unquote(lit.Value); strings.HasPrefix(s, "codeexec_") {
									fieldName[field.Name] = s
								}
							}
						}
					}
					return true
				})
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "WithLabelValues" {
					calls = append(calls, n)
				}
			}
			return true
		})
	}
	for _, c := range calls {
		field, ok := c.Fun.(*ast.SelectorExpr).X.(*ast.SelectorExpr)
		if !ok || len(c.Args) != 1 {
			t.Errorf("%s: a WithLabelValues this test does not understand", fset.Position(c.Pos()))
			continue
		}
		lit, ok := c.Args[0].(*ast.BasicLit)
		if !ok {
			continue // a computed value: found below, from the vectors
		}
		name, ok := fieldName[field.Sel.Name]
		if !ok {
			t.Errorf("%s: WithLabelValues on %s, which is no metric of newMetrics", fset.Position(c.Pos()), field.Sel.Name)
			continue
		}
		v, _ := strconv.Unquote(lit.Value)
		add(name, v)
	}

	// The vectors, after one execution of each status newMetrics
	// registers, with an allowed and a denied egress request.
	m := newMetrics(&Server{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.executions, m.limitHits, m.egress)
	exported := func() []string {
		rec := httptest.NewRecorder()
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return strings.Split(rec.Body.String(), "\n")
	}
	sample := regexp.MustCompile(`^(codeexec_\w+)\{\w+="([^"]*)"\}`)
	for _, line := range exported() {
		if s := sample.FindStringSubmatch(line); s != nil && s[1] == "codeexec_executions_total" {
			m.observe(&executor.Result{Status: executor.Status(s[2]), Network: []egress.Access{{Host: "a.test", Allowed: true}, {Host: "b.test"}}})
		}
	}
	for _, line := range exported() {
		if s := sample.FindStringSubmatch(line); s != nil {
			add(s[1], s[2])
		}
	}
	if len(code["codeexec_executions_total"]) < 6 || len(code["codeexec_rejected_total"]) == 0 {
		t.Fatalf("found too little in the code: %v", code)
	}

	// The table.
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]map[string]bool{}
	ticked := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "| `codeexec_") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			t.Errorf("metrics table row %q has too few cells", line)
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		doc[name] = map[string]bool{}
		if _, values, ok := strings.Cut(cells[3], ":"); ok {
			for _, v := range ticked.FindAllStringSubmatch(values, -1) {
				doc[name][v[1]] = true
			}
		}
	}
	keys := func(s map[string]bool) []string {
		var out []string
		for k := range s {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	for name, values := range code {
		dv, ok := doc[name]
		if !ok {
			t.Errorf("docs/configuration.md: the metrics table has no row for %s", name)
			continue
		}
		if strings.Join(keys(dv), ",") != strings.Join(keys(values), ",") {
			t.Errorf("docs/configuration.md: %s lists label values %v, the code exports %v", name, keys(dv), keys(values))
		}
	}
	for name := range doc {
		if _, ok := code[name]; !ok {
			t.Errorf("docs/configuration.md: the metrics table lists %s, which the code does not export", name)
		}
	}
}
