package httpapi

import (
	"net/http"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// seriesCache keeps the attribute set of each series of the request
// metric (method, route, status), so a request records into its series
// without building, sorting and hashing a new set: that was a quarter of
// what the metric cost a poll. The series are bounded by the routes, the
// standard methods and the statuses the handlers answer; a request of
// another method gets its set built as before, so a client cannot grow
// the cache.
type seriesCache struct {
	m sync.Map
	n atomic.Int64
}

type seriesKey struct {
	method, route string
	status        int
}

// maxSeries bounds the cache whatever the statuses turn out to be.
const maxSeries = 4096

// of returns the measurement option of the series, the same attributes in
// the same set as metric.WithAttributes of them gives.
func (c *seriesCache) of(method, route string, status int) metric.MeasurementOption {
	k := seriesKey{method, route, status}
	if o, ok := c.m.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	attrs := []attribute.KeyValue{semconv.HTTPRequestMethodKey.String(method), semconv.HTTPResponseStatusCode(status)}
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	o := metric.WithAttributeSet(attribute.NewSet(attrs...))
	if standardMethod(method) && c.n.Load() < maxSeries {
		if _, loaded := c.m.LoadOrStore(k, o); !loaded {
			c.n.Add(1)
		}
	}
	return o
}

func standardMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}
