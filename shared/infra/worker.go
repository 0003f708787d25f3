package infra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"dataport.dev/shared/bus"
)

// Worker is the shape of a consuming service: health probes on HTTP, one
// durable consumer, and optional side loops (a sweeper, a scheduler).
type Worker struct {
	HealthAddr string
	Ready      func(context.Context) error
	Consumer   jetstream.Consumer
	Handler    bus.Handler
	// Consume tunes the consume loop; Grace defaults to half of
	// ShutdownTimeout.
	Consume         bus.ConsumeOptions
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// HTTP bounds the probe server's connections; zero fields take the
	// defaults of HTTPTimeouts.
	HTTP HTTPTimeouts
	// Also are further loops run until ctx ends; an error from any of them
	// stops the worker.
	Also []func(context.Context) error
}

// Run serves the probes and consumes until ctx ends, then shuts down in
// the order Kubernetes needs: the probes go first, so no new traffic is
// routed here, and only then does the consumer stop pulling and hand back
// in-flight messages. Half the shutdown budget goes to each.
func (w Worker) Run(ctx context.Context) error {
	if w.Logger == nil {
		w.Logger = slog.New(slog.DiscardHandler)
	}
	if w.Consume.Grace <= 0 {
		w.Consume.Grace = w.ShutdownTimeout / 2
	}
	if w.Consume.Logger == nil {
		w.Consume.Logger = w.Logger
	}
	mux := http.NewServeMux()
	HealthRoutes(mux, w.Ready, w.Logger)

	consumeCtx, stopConsuming := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsuming()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer stopConsuming()
		return Serve(gctx, w.HealthAddr, mux, w.HTTP, w.ShutdownTimeout/2, w.Logger)
	})
	g.Go(func() error {
		if err := bus.Consume(consumeCtx, w.Consumer, w.Handler, w.Consume); err != nil {
			return fmt.Errorf("consume: %w", err)
		}
		if consumeCtx.Err() == nil {
			// Consume returns early only when its consumer went away; a
			// worker that no longer consumes must not look healthy.
			return errors.New("consume: stopped unexpectedly")
		}
		return nil
	})
	for _, loop := range w.Also {
		g.Go(func() error { return loop(gctx) })
	}
	return g.Wait()
}
