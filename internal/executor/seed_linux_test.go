package executor

import (
	"bytes"
	"context"
	"encoding/base64"
	"image/png"
	"strings"
	"testing"
)

// The seed document's use cases, with answers checked.
func TestSeedUseCases(t *testing.T) {
	e := newTestExecutor(t, Config{})
	tests := []struct {
		name       string
		code       string
		wantStdout string // substring
		wantResult string // substring of text/plain
	}{
		{
			name:       "compound interest",
			code:       "p, r, n = 10_000, 0.05, 10\namount = p * (1 + r) ** n\nprint(f'{amount:.2f}')",
			wantStdout: "16288.95",
		},
		{
			name:       "fibonacci",
			code:       "fib = [0, 1]\nwhile len(fib) < 20:\n    fib.append(fib[-1] + fib[-2])\nfib",
			wantResult: "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181]",
		},
		{
			name: "csv trends with pandas",
			code: `import io, pandas as pd
csv = """month,sales
2024-01,100
2024-02,120
2024-03,145
2024-04,160
"""
df = pd.read_csv(io.StringIO(csv))
slope = df["sales"].diff().mean()
print("trend", "up" if slope > 0 else "down", round(slope, 2))
df.describe()`,
			wantStdout: "trend up 20.0",
			wantResult: "mean",
		},
		{
			name:       "scipy t-test",
			code:       "from scipy import stats\nr = stats.ttest_ind([1,2,3,4,5], [6,7,8,9,10])\nprint(round(r.statistic, 3), r.pvalue < 0.01)",
			wantStdout: "-5.0 True",
		},
		{
			name:       "sympy solve",
			code:       "import sympy as sp\nx = sp.symbols('x')\nsp.solve(x**2 - 5*x + 6, x)",
			wantResult: "[2, 3]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := e.Execute(context.Background(), Request{Code: tt.code})
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if res.Status != StatusOK {
				t.Fatalf("status = %s, error = %+v, stderr = %s", res.Status, res.Error, res.Stderr)
			}
			if !strings.Contains(res.Stdout, tt.wantStdout) {
				t.Errorf("stdout = %q, want it to contain %q", res.Stdout, tt.wantStdout)
			}
			if tt.wantResult != "" {
				got, _ := res.Result["text/plain"].(string)
				if !strings.Contains(got, tt.wantResult) {
					t.Errorf("result = %q, want it to contain %q", got, tt.wantResult)
				}
			}
		})
	}
}

func TestBarChartPNG(t *testing.T) {
	e := newTestExecutor(t, Config{})
	code := `import matplotlib.pyplot as plt
langs = ["Python", "Go", "Rust", "JavaScript", "C"]
plt.bar(langs, [30, 20, 15, 25, 10])
plt.title("Popularity")
plt.show()`
	res, err := e.Execute(context.Background(), Request{Code: code})
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if res.Status != StatusOK || len(res.Displays) != 1 {
		t.Fatalf("status %s, %d displays, error %+v", res.Status, len(res.Displays), res.Error)
	}
	b64, _ := res.Displays[0]["image/png"].(string)
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("display is not base64: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("display is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("PNG is %v, too small for a chart", b)
	}
}
