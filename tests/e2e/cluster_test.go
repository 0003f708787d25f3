package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/infra/infratest"
)

// cluster is three embedded JetStream servers routed to each other on
// loopback, as a production R3 deployment is.
type cluster struct {
	servers []*server.Server
	urls    []string
}

func (c *cluster) url() string { return strings.Join(c.urls, ",") }

func startCluster(t *testing.T) *cluster {
	t.Helper()
	const n = 3
	routePorts := make([]int, n)
	for i := range routePorts {
		_, port, err := net.SplitHostPort(infratest.FreeAddr(t))
		require.NoError(t, err)
		_, err = fmt.Sscan(port, &routePorts[i])
		require.NoError(t, err)
	}
	c := &cluster{}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: "dataport-e2e",
				Host: "127.0.0.1",
				Port: routePorts[i],
			},
		}
		for j := range n {
			if j != i {
				opts.Routes = append(opts.Routes, server.RoutesFromStr(fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[j]))...)
			}
		}
		srv, err := server.NewServer(opts)
		require.NoError(t, err)
		go srv.Start()
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		c.servers = append(c.servers, srv)
	}
	for _, srv := range c.servers {
		require.True(t, srv.ReadyForConnections(20*time.Second), "cluster node not ready")
		c.urls = append(c.urls, srv.ClientURL())
	}
	// JetStream needs a meta leader before streams can be declared.
	require.Eventually(t, func() bool {
		for _, srv := range c.servers {
			if srv.JetStreamIsLeader() {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "no JetStream meta leader")

	// Declare the R3 topology before the services start: on a loaded
	// machine, six processes placing fifteen R3 assets at once can outlast
	// the JetStream API timeout, and the services then only find them.
	js := natsJS(t, c.url())
	topo := bus.DefaultTopology()
	topo.Replicas = 3
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		assert.NoError(ct, bus.EnsureTopology(ctx, js, topo))
	}, 2*time.Minute, time.Second, "declare the R3 topology")
	return c
}

// TestClusterLosesANode runs Dataport on a three-node JetStream cluster with
// every stream and bucket at R3, and shuts one node down in the middle of
// exports: every job completes and the big room's file is complete.
func TestClusterLosesANode(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	s := startStackWith(t, stackOptions{natsURL: c.url(), env: []string{"DATAPORT_STREAM_REPLICAS=3"}})
	js := natsJS(t, c.url())

	stream, err := js.Stream(t.Context(), bus.StreamExportTasks)
	require.NoError(t, err)
	info, err := stream.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3, info.Config.Replicas, "services declared R3 streams")

	const n = 5000
	seedBigRoom(t, js, n, bigMessageSize)
	admin := s.user(t, "admin")
	ids := []string{
		createRoomExport(t, s, admin, bigRoom, ""),
		createRoomExport(t, s, admin, "GENERAL", ""),
		createRoomExport(t, s, admin, bigRoom, ""),
	}
	waitProcessing(t, s, admin, ids[0])
	// Lose the node that leads the task stream, the worst case for work
	// in flight.
	victim := c.servers[0]
	if ci := info.Cluster; ci != nil {
		for _, srv := range c.servers {
			if srv.Name() == ci.Leader {
				victim = srv
			}
		}
	}
	t.Logf("shutting down %s", victim.Name())
	victim.Shutdown()

	jobs := waitAllCompleted(t, s, admin, ids, 3*time.Minute)
	rows := checkBigRoomFile(t, jobs[ids[0]], n) + checkBigRoomFile(t, jobs[ids[2]], n)
	assert.Equal(t, jobs[ids[0]].Files[0].SHA256, jobs[ids[2]].Files[0].SHA256, "both exports of the room are identical")
	lost := 0
	completed := completedEvents(t, js)
	for _, id := range ids {
		if jobs[id].State != "completed" {
			lost++
		}
		assert.Equal(t, 1, completed[id], "one completion event for %s", id)
	}
	figures{faults: 1, jobs: len(ids), lost: lost, rowsChecked: 2 * n, rowErrors: rows}.log(t, "cluster-node-loss")
}
