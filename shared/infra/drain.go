package infra

import (
	"context"
	"net"
	"net/http"
	"sync"
)

type drainKey struct{}

// Draining returns a channel that is closed when the HTTP server serving
// ctx's request begins to shut down. http.Server.Shutdown waits for every
// open request, so an answer that lasts as long as the client listens (a
// server-sent event stream) must end by itself when this is closed, or it
// holds the shutdown to its deadline; a download, which ends anyway, need
// not look. Outside a server prepared by DrainOnShutdown the channel is
// nil and never ready.
func Draining(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(drainKey{}).(<-chan struct{})
	return ch
}

// DrainOnShutdown prepares srv so that Draining of its requests' contexts
// is closed as soon as srv.Shutdown begins. Serve calls it; a test that
// runs its own server calls it too. Call it before the server starts.
func DrainOnShutdown(srv *http.Server) {
	ch := make(chan struct{})
	var once sync.Once
	srv.RegisterOnShutdown(func() { once.Do(func() { close(ch) }) })
	base := srv.BaseContext
	srv.BaseContext = func(l net.Listener) context.Context {
		ctx := context.Background()
		if base != nil {
			ctx = base(l)
		}
		return context.WithValue(ctx, drainKey{}, (<-chan struct{})(ch))
	}
}
