//go:build linux

package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"codeexec/internal/executor"
)

// metrics are the server's Prometheus metrics, in a registry of its own so
// that tests can run several servers in one process.
type metrics struct {
	reg        *prometheus.Registry
	executions *prometheus.CounterVec
	duration   prometheus.Histogram
	queueWait  prometheus.Histogram
	limitHits  *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	sessions   prometheus.Gauge
	fileBytes  *prometheus.CounterVec
	egress     *prometheus.CounterVec
	forwarded  prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_executions_total", Help: "Executions by final status.",
		}, []string{"status"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "codeexec_execution_duration_seconds", Help: "Wall time of user code in the sandbox.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "codeexec_queue_wait_seconds", Help: "Time an execution spent outside user code: waiting for a warm sandbox and overhead.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_limit_hits_total", Help: "Executions stopped by a limit, by kind.",
		}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_rejected_total", Help: "Requests refused (429, or 503 at capacity), by reason.",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "codeexec_live_sessions", Help: "Sessions with a live process.",
		}),
		fileBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_file_bytes_total", Help: "Bytes of files moved, by direction (upload, download, generated).",
		}, []string{"direction"}),
		egress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "codeexec_egress_requests_total", Help: "Requests of sandboxed code to the egress proxy, by outcome (allowed, denied).",
		}, []string{"outcome"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "codeexec_forwarded_requests_total", Help: "Requests for a session on another node, forwarded to it.",
		}),
	}
	m.reg.MustRegister(m.executions, m.duration, m.queueWait, m.limitHits, m.rejected, m.sessions, m.fileBytes, m.egress, m.forwarded,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "codeexec_warm_sandboxes", Help: "Warm sandboxes ready for code.",
		}, func() float64 { return float64(s.exec.Warm()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "codeexec_warm_sandboxes_pandas", Help: "Of the warm sandboxes, those that have also warmed up pandas (--data-warmup).",
		}, func() float64 { return float64(s.exec.WarmData()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "codeexec_queue_depth", Help: "Executions admitted and not finished (running or waiting for a sandbox).",
		}, func() float64 { return float64(s.inflight.Load()) }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, st := range []executor.Status{executor.StatusOK, executor.StatusError, executor.StatusTimeout,
		executor.StatusMemoryLimit, executor.StatusOutputLimit, executor.StatusKilled} {
		m.executions.WithLabelValues(string(st))
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) observe(r *executor.Result) {
	m.executions.WithLabelValues(string(r.Status)).Inc()
	m.duration.Observe(r.DurationMS / 1000)
	for _, a := range r.Network {
		if a.Allowed {
			m.egress.WithLabelValues("allowed").Inc()
		} else {
			m.egress.WithLabelValues("denied").Inc()
		}
	}
	switch r.Status {
	case executor.StatusTimeout, executor.StatusMemoryLimit, executor.StatusOutputLimit:
		m.limitHits.WithLabelValues(string(r.Status)).Inc()
	}
}
