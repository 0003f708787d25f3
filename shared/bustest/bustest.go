// Package bustest starts a real, embedded NATS server with JetStream for
// tests, on a free loopback port with its store in a temporary directory.
package bustest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
)

// Server is a running embedded JetStream server and a client of it.
type Server struct {
	*server.Server
	URL      string
	StoreDir string
	Conn     *nats.Conn
	JS       jetstream.JetStream
}

// Start runs a JetStream server that lives until the test ends, connects a
// client and declares Dataport's streams and buckets with a test topology.
func Start(t testing.TB) *Server {
	t.Helper()
	s := StartBare(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.EnsureTopology(ctx, s.JS, Topology()); err != nil {
		t.Fatalf("bustest: ensure topology: %v", err)
	}
	return s
}

// StartBare runs a JetStream server with no streams declared.
func StartBare(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	srv := run(t, dir, -1)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("bustest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("bustest: jetstream: %v", err)
	}
	return &Server{Server: srv, URL: srv.ClientURL(), StoreDir: dir, Conn: nc, JS: js}
}

// Restart stops the server and starts it again on the same port and store,
// as a crash-and-restart of a single node would. Clients reconnect by
// themselves.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	port := s.Addr().(*net.TCPAddr).Port
	s.Shutdown()
	s.WaitForShutdown()
	s.Server = run(t, s.StoreDir, port)
}

func run(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("bustest: new server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatalf("bustest: server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// Topology is the bus topology for tests: R1 and short ack waits, so a
// redelivery after a lost worker takes seconds, not minutes.
func Topology() bus.Topology {
	t := bus.DefaultTopology()
	t.TaskAckWait = 5 * time.Second
	t.EventAckWait = 5 * time.Second
	return t
}

// TaskSigner returns a signer with a key fixed for tests, so the gateway's
// and the exporters' sides of a test agree on it.
func TaskSigner(t testing.TB) *bus.TaskSigner {
	t.Helper()
	s, err := bus.NewTaskSigner([]byte("bustest-task-signing-key-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Put stores m under key in a KV bucket of js, as the host platform or
// another service would have; a user is also indexed, as every writer of
// users does (access.IndexUser).
func Put(t testing.TB, js jetstream.JetStream, bucket, key string, m proto.Message) {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatalf("bustest: bucket %s: %v", bucket, err)
	}
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("bustest: marshal %s/%s: %v", bucket, key, err)
	}
	if _, err := kv.Put(t.Context(), key, data); err != nil {
		t.Fatalf("bustest: put %s/%s: %v", bucket, key, err)
	}
	if u, ok := m.(*sourcev1.User); ok && bucket == bus.BucketUsers {
		index, err := js.KeyValue(t.Context(), bus.BucketUserIndex)
		if err != nil {
			t.Fatalf("bustest: bucket %s: %v", bus.BucketUserIndex, err)
		}
		if _, err := access.IndexUser(t.Context(), index, u); err != nil {
			t.Fatalf("bustest: index user %s: %v", key, err)
		}
	}
}
