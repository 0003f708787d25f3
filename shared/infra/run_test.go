package infra_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/infra/infratest"
	"dataport.dev/shared/taskrun"
)

func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// newConsumer declares a work queue of its own for a test service.
func newConsumer(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		return nil, err
	}
	return js.CreateOrUpdateConsumer(ctx, "W", jetstream.ConsumerConfig{
		Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second, MaxDeliver: 3,
	})
}

// service is a test service with no variables of its own, built by build.
func service(build func(ctx context.Context, d infra.Deps) (infra.Parts, error)) infratest.RunFunc {
	return func(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
		return infra.Run(ctx, getenv, stdout, infra.Service[struct{}]{
			Name: "test-service",
			Load: func(*config.Loader) (struct{}, error) { return struct{}{}, nil },
			Build: func(ctx context.Context, d infra.Deps, _ struct{}) (infra.Parts, error) {
				return build(ctx, d)
			},
		})
	}
}

func TestRunServesProbesConsumesAndStopsCleanly(t *testing.T) {
	st := infratest.StartStack(t)
	var handled atomic.Int32
	var ready atomic.Bool
	addr := infratest.FreeAddr(t)
	p := infratest.Start(t, service(func(ctx context.Context, d infra.Deps) (infra.Parts, error) {
		cons, err := newConsumer(ctx, d.Infra.JS)
		return infra.Parts{
			HTTP: infra.HTTP{Addr: addr},
			Consumers: []infra.Consumer{{Consumer: cons, Handler: func(context.Context, jetstream.Msg) error {
				handled.Add(1)
				return nil
			}}},
			Ready: func(context.Context) error {
				if !ready.Load() {
					return errors.New("warming up")
				}
				return nil
			},
		}, err
	}), st.Env(nil))

	require.Eventually(t, func() bool { return status("http://"+addr+"/healthz") == http.StatusOK }, 30*time.Second, 20*time.Millisecond)
	assert.Equal(t, http.StatusServiceUnavailable, status("http://"+addr+"/readyz"), "not ready until the check passes")
	ready.Store(true)
	p.WaitReady(t, addr)
	assert.Contains(t, p.Output(t), "DATAPORT_SHUTDOWN_TIMEOUT=5s\n", "the configuration is printed")
	infratest.AssertMasked(t, p.Output(t), map[string]string{"DATAPORT_S3_SECRET_KEY": st.MinIO.Config.SecretKey})

	_, err := st.NATS.JS.Publish(t.Context(), "w.one", []byte("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return handled.Load() == 1 }, 5*time.Second, 20*time.Millisecond)

	// /metrics on the same server counts the message and shows the
	// consumer's backlog.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		body := get(c, "http://"+addr+"/metrics")
		assert.Contains(c, body, `dataport_messages_handled_total{messaging_consumer_group_name="w",messaging_destination_template="w.one",messaging_system="nats",otel_scope_name="dataport.dev/shared/bus"`)
		assert.Contains(c, body, `outcome="ack"`)
		assert.Contains(c, body, `dataport_consumer_pending{messaging_consumer_group_name="w"`)
		assert.Contains(c, body, `service_name="test-service"`)
	}, 5*time.Second, 50*time.Millisecond)

	p.Stop(t)
}

// A service with an ops address keeps /metrics off its public listener:
// the gateway's API port is what its Ingress publishes.
func TestRunServesMetricsOnlyOnTheOpsListener(t *testing.T) {
	st := infratest.StartStack(t)
	api, ops := infratest.FreeAddr(t), infratest.FreeAddr(t)
	routes := http.NewServeMux()
	routes.HandleFunc("/v1/hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })
	p := infratest.Start(t, service(func(ctx context.Context, d infra.Deps) (infra.Parts, error) {
		return infra.Parts{HTTP: infra.HTTP{Addr: api, Handler: routes, OpsAddr: ops}}, nil
	}), st.Env(nil))
	p.WaitReady(t, api)
	p.WaitReady(t, ops)

	assert.Equal(t, http.StatusOK, status("http://"+api+"/v1/hello"))
	assert.Equal(t, http.StatusNotFound, status("http://"+api+"/metrics"), "no metrics on the public listener")
	assert.Equal(t, http.StatusNotFound, status("http://"+ops+"/v1/hello"), "no routes on the ops listener")
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Contains(c, get(c, "http://"+ops+"/metrics"), `service_name="test-service"`)
	}, 5*time.Second, 50*time.Millisecond)
	p.Stop(t)
	assert.Equal(t, 0, status("http://"+ops+"/healthz"), "the ops listener stops with the service")
}

// Profiles are off unless DATAPORT_PPROF_ADDR is set, and then only on
// their own listener, never on the service's.
func TestRunServesProfilesOnlyWhenAsked(t *testing.T) {
	st := infratest.StartStack(t)
	api, prof := infratest.FreeAddr(t), infratest.FreeAddr(t)
	p := infratest.Start(t, service(func(ctx context.Context, d infra.Deps) (infra.Parts, error) {
		return infra.Parts{HTTP: infra.HTTP{Addr: api}}, nil
	}), st.Env(map[string]string{"DATAPORT_PPROF_ADDR": prof}))
	p.WaitReady(t, api)
	require.Eventually(t, func() bool { return status("http://"+prof+"/debug/pprof/cmdline") == http.StatusOK }, 5*time.Second, 20*time.Millisecond)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Contains(c, get(c, "http://"+prof+"/debug/pprof/"), "goroutine")
	}, 5*time.Second, 50*time.Millisecond)
	assert.Equal(t, http.StatusNotFound, status("http://"+api+"/debug/pprof/"), "no profiles on the service's listener")
	p.Stop(t)
	assert.Equal(t, 0, status("http://"+prof+"/debug/pprof/cmdline"), "the profile listener stops with the service")

	other := infratest.FreeAddr(t)
	q := infratest.Start(t, service(func(ctx context.Context, d infra.Deps) (infra.Parts, error) {
		return infra.Parts{HTTP: infra.HTTP{Addr: other}}, nil
	}), st.Env(nil))
	q.WaitReady(t, other)
	assert.Equal(t, http.StatusNotFound, status("http://"+other+"/debug/pprof/"), "no profiles by default")
	q.Stop(t)
}

func get(c *assert.CollectT, url string) string {
	resp, err := http.Get(url)
	if !assert.NoError(c, err) {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	assert.NoError(c, err)
	return string(b)
}

func TestRunFailsWhenItsConsumerDisappears(t *testing.T) {
	st := infratest.StartStack(t)
	done := make(chan error, 1)
	run := service(func(ctx context.Context, d infra.Deps) (infra.Parts, error) {
		cons, err := newConsumer(ctx, d.Infra.JS)
		return infra.Parts{
			HTTP:      infra.HTTP{Addr: infratest.FreeAddr(t)},
			Consumers: []infra.Consumer{{Consumer: cons, Handler: func(context.Context, jetstream.Msg) error { return nil }}},
		}, err
	})
	go func() { done <- run(t.Context(), infratest.Getenv(st.Env(nil)), io.Discard) }()
	require.Eventually(t, func() bool {
		cons, err := st.NATS.JS.Consumer(t.Context(), "W", "w")
		if err != nil {
			return false
		}
		info, err := cons.Info(t.Context())
		return err == nil && info.NumWaiting > 0
	}, 30*time.Second, 20*time.Millisecond, "the service pulls")
	require.NoError(t, st.NATS.JS.DeleteConsumer(t.Context(), "W", "w"))
	select {
	case err := <-done:
		require.Error(t, err, "a service whose consumer is gone must stop, not look healthy")
		assert.Contains(t, err.Error(), "consumer w")
	case <-time.After(30 * time.Second):
		t.Fatal("the service kept running without a consumer")
	}
}

// TestRunShutsDownInOrder follows one shutdown step by step: the HTTP
// server stops taking connections and finishes its open request while the
// consumer still works; only then do the loops stop and the consumer
// finish its message; the NATS connection is still up for that message's
// ack and closed before telemetry is flushed, last. Each step is released
// by the test once the one before it is seen, so the order recorded is the
// runner's, not the scheduler's.
func TestRunShutsDownInOrder(t *testing.T) {
	st := infratest.StartStack(t)
	var (
		mu    sync.Mutex
		steps []string
	)
	record := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		steps = append(steps, fmt.Sprintf(format, args...))
	}
	var conn atomic.Pointer[nats.Conn]
	var flushed atomic.Bool
	// The OTLP collector: the meter provider exports only every minute
	// and on shutdown, so its first request is the final flush.
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/metrics" && !flushed.Swap(true) {
			record("telemetry flushed; NATS closed: %t", conn.Load().IsClosed())
		}
	}))
	t.Cleanup(collector.Close)

	requestOpen, releaseRequest := make(chan struct{}), make(chan struct{})
	handling, releaseMessage := make(chan struct{}), make(chan struct{})
	loopsStopped := make(chan struct{})
	addr := infratest.FreeAddr(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, _ *http.Request) {
		close(requestOpen)
		<-releaseRequest
		record("open HTTP request finished")
	})
	p := infratest.Start(t, service(func(ctx context.Context, d infra.Deps) (infra.Parts, error) {
		conn.Store(d.Infra.NC)
		counter, err := d.Telemetry.MeterProvider.Meter("test").Int64Counter("starts")
		if err != nil {
			return infra.Parts{}, err
		}
		counter.Add(ctx, 1)
		cons, err := newConsumer(ctx, d.Infra.JS)
		return infra.Parts{
			HTTP: infra.HTTP{Addr: addr, Handler: mux},
			Consumers: []infra.Consumer{{Consumer: cons, Handler: func(context.Context, jetstream.Msg) error {
				close(handling)
				<-releaseMessage
				record("message handled; NATS connected: %t", d.Infra.NC.IsConnected())
				return nil
			}, Options: bus.ConsumeOptions{Heartbeat: time.Second}}},
			Loops: []func(context.Context) error{func(ctx context.Context) error {
				<-ctx.Done()
				record("loops stopped")
				close(loopsStopped)
				return nil
			}},
		}, err
	}), st.Env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
		"DATAPORT_SHUTDOWN_TIMEOUT":   "10s",
	}))
	p.WaitReady(t, addr)

	slow := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err == nil {
			resp.Body.Close()
		}
		slow <- err
	}()
	<-requestOpen
	p.Interrupt()
	require.Eventually(t, func() bool { return status("http://"+addr+"/healthz") == 0 }, 10*time.Second, 10*time.Millisecond,
		"the HTTP server stops taking connections first")
	_, err := st.NATS.JS.Publish(t.Context(), "w.slow", []byte("x"))
	require.NoError(t, err)
	select {
	case <-handling:
	case <-time.After(10 * time.Second):
		t.Fatal("the consumer stopped before the HTTP server finished")
	}
	select {
	case <-loopsStopped:
		t.Fatal("the loops stopped before the HTTP server finished")
	default:
	}

	close(releaseRequest)
	require.NoError(t, <-slow, "the open request is answered")
	<-loopsStopped
	close(releaseMessage)
	p.Stop(t)

	assert.Equal(t, []string{
		"open HTTP request finished",
		"loops stopped",
		"message handled; NATS connected: true",
		"telemetry flushed; NATS closed: true",
	}, steps)
	cons, err := st.NATS.JS.Consumer(t.Context(), "W", "w")
	require.NoError(t, err)
	info, err := cons.Info(t.Context())
	require.NoError(t, err)
	assert.Zero(t, info.NumAckPending, "the message was acked before NATS was drained")
	assert.Zero(t, info.NumPending)
}

func TestRunExporterRejectsBadConfig(t *testing.T) {
	run := func(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
		return infra.RunExporter(ctx, getenv, stdout, infra.Exporter{
			Name: "test-exporter", HealthAddr: "127.0.0.1:0", Consumer: "none",
			Register: func(context.Context, infra.ExporterDeps, *taskrun.Runner) error {
				return errors.New("not reached")
			},
		})
	}
	tests := []struct {
		name, key, value string
	}{
		{"concurrency zero", "DATAPORT_EXPORTER_CONCURRENCY", "0"},
		{"concurrency too high", "DATAPORT_EXPORTER_CONCURRENCY", "65"},
		{"concurrency not a number", "DATAPORT_EXPORTER_CONCURRENCY", "four"},
		{"health address without port", "DATAPORT_HEALTH_ADDR", "localhost"},
		{"bad log level", "DATAPORT_LOG_LEVEL", "loud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infratest.RejectsConfig(t, run, map[string]string{tt.key: tt.value}, tt.key)
		})
	}
}
