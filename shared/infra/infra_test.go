package infra_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bustest"
	"dataport.dev/shared/infra"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func newConsumer(t *testing.T, srv *bustest.Server) jetstream.Consumer {
	t.Helper()
	_, err := srv.JS.CreateStream(t.Context(), jetstream.StreamConfig{Name: "W", Subjects: []string{"w.>"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	c, err := srv.JS.CreateOrUpdateConsumer(t.Context(), "W", jetstream.ConsumerConfig{
		Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second, MaxDeliver: 3,
	})
	require.NoError(t, err)
	return c
}

func TestWorkerServesProbesConsumesAndStopsCleanly(t *testing.T) {
	srv := bustest.StartBare(t)
	cons := newConsumer(t, srv)
	var handled atomic.Int32
	var ready atomic.Bool
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- infra.Worker{
			HealthAddr: addr,
			Ready: func(context.Context) error {
				if !ready.Load() {
					return errors.New("warming up")
				}
				return nil
			},
			Consumer:        cons,
			Handler:         func(context.Context, jetstream.Msg) error { handled.Add(1); return nil },
			ShutdownTimeout: 2 * time.Second,
		}.Run(ctx)
	}()

	require.Eventually(t, func() bool { return status("http://"+addr+"/healthz") == http.StatusOK }, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, http.StatusServiceUnavailable, status("http://"+addr+"/readyz"), "not ready until the check passes")
	ready.Store(true)
	assert.Equal(t, http.StatusOK, status("http://"+addr+"/readyz"))

	_, err := srv.JS.Publish(t.Context(), "w.one", []byte("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return handled.Load() == 1 }, 5*time.Second, 20*time.Millisecond)

	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not stop")
	}
	assert.Zero(t, status("http://"+addr+"/healthz"), "the probes are gone after shutdown")
}

func TestWorkerFailsWhenItsConsumerDisappears(t *testing.T) {
	srv := bustest.StartBare(t)
	cons := newConsumer(t, srv)
	done := make(chan error, 1)
	go func() {
		done <- infra.Worker{
			HealthAddr:      freeAddr(t),
			Ready:           func(context.Context) error { return nil },
			Consumer:        cons,
			Handler:         func(context.Context, jetstream.Msg) error { return nil },
			ShutdownTimeout: 2 * time.Second,
		}.Run(t.Context())
	}()
	require.Eventually(t, func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumWaiting > 0
	}, 5*time.Second, 20*time.Millisecond, "the worker pulls")
	require.NoError(t, srv.JS.DeleteConsumer(t.Context(), "W", "w"))
	select {
	case err := <-done:
		assert.Error(t, err, "a worker whose consumer is gone must stop, not look healthy")
	case <-time.After(30 * time.Second):
		t.Fatal("worker kept running without a consumer")
	}
}
