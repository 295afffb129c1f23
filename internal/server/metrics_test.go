//go:build linux

package server

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"codeexec/internal/egress"
	"codeexec/internal/executor"
)

func TestMetricsObserve(t *testing.T) {
	m := newMetrics(&Server{})
	m.observe(&executor.Result{Status: executor.StatusOK, Network: []egress.Access{{Host: "a.test", Allowed: true}, {Host: "b.test"}, {Host: "c.test"}}})
	m.observe(&executor.Result{Status: executor.StatusTimeout})
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"egress allowed", testutil.ToFloat64(m.egress.WithLabelValues("allowed")), 1},
		{"egress denied", testutil.ToFloat64(m.egress.WithLabelValues("denied")), 2},
		{"executions ok", testutil.ToFloat64(m.executions.WithLabelValues("ok")), 1},
		{"timeouts", testutil.ToFloat64(m.executions.WithLabelValues("timeout")), 1},
		{"limit hits", testutil.ToFloat64(m.limitHits.WithLabelValues("timeout")), 1},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}
