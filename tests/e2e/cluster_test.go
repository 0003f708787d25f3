package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bus"
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
		_, port, err := net.SplitHostPort(freeAddr(t))
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
		reservePort(t, srv.ClientURL())
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

// TestClusterLosesANode runs Dataport with the default configuration on a
// three-node JetStream cluster with every stream and bucket at R3. First
// the leaders of the task stream, the exporter's consumer and the events
// stream step down in the middle of exports; then the node that leads the
// task stream is shut down in the middle of more. Every job completes and
// every big-room file is the same to the byte.
func TestClusterLosesANode(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	s := startStackWith(t, stackOptions{natsURL: c.url(), defaults: true, env: []string{"DATAPORT_STREAM_REPLICAS=3"}})
	js := natsJS(t, c.url())

	stream, err := js.Stream(t.Context(), bus.StreamExportTasks)
	require.NoError(t, err)
	info, err := stream.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3, info.Config.Replicas, "services declared R3 streams")

	const n = 5000
	seedBigRoom(t, js, n, bigMessageSize)
	admin := s.user(t, "admin")
	var all []string
	var f figures
	want := ""
	check := func(jobs map[string]nativeJob, id string) {
		t.Helper()
		f.rowErrors += checkBigRoomFile(t, jobs[id], n)
		f.rowsChecked += n
		if want == "" {
			want = jobs[id].Files[0].SHA256
		}
		assert.Equal(t, want, jobs[id].Files[0].SHA256, "every export of the room is identical")
	}

	t.Run("leaders step down mid-export", func(t *testing.T) {
		// Four big-room exports (and one small) keep the exporter busy
		// while the three leaders change, back to back.
		ids := []string{createRoomExport(t, s, admin, bigRoom, ""), createRoomExport(t, s, admin, bigRoom, ""),
			createRoomExport(t, s, admin, bigRoom, ""), createRoomExport(t, s, admin, bigRoom, ""), createRoomExport(t, s, admin, "GENERAL", "")}
		all = append(all, ids...)
		waitProcessing(t, s, admin, ids[0])
		subjects := []string{
			"$JS.API.STREAM.LEADER.STEPDOWN." + bus.StreamExportTasks,
			"$JS.API.CONSUMER.LEADER.STEPDOWN." + bus.StreamExportTasks + "." + bus.ConsumerRoomExporter,
			"$JS.API.STREAM.LEADER.STEPDOWN." + bus.StreamExportEvents,
		}
		before := map[string]string{}
		for _, subj := range subjects {
			before[subj] = leaderOf(t, js, subj)
			resp, err := js.Conn().Request(subj, nil, 10*time.Second)
			require.NoError(t, err, subj)
			assert.Contains(t, string(resp.Data), `"success":true`, "%s: %s", subj, resp.Data)
			f.faults++
		}
		unfinished := 0
		for _, id := range ids {
			if j, err := getJob(t.Context(), s, admin, id); err == nil && j.State != "completed" {
				unfinished++
			}
		}
		t.Logf("%d of %d jobs unfinished right after the three stepdowns", unfinished, len(ids))
		assert.Positive(t, unfinished, "the leaders changed mid-export")
		for _, subj := range subjects {
			require.EventuallyWithT(t, func(ct *assert.CollectT) {
				after := leaderOf(t, js, subj)
				assert.NotEmpty(ct, after)
				assert.NotEqual(ct, before[subj], after)
			}, 30*time.Second, 100*time.Millisecond, "a new leader for %s", subj)
			t.Logf("%s: leader %s → %s", subj, before[subj], leaderOf(t, js, subj))
		}
		jobs := waitAllCompleted(t, s, admin, ids, 3*time.Minute)
		for _, id := range ids[:4] {
			check(jobs, id)
		}
	})

	t.Run("the task stream's leader node is shut down mid-export", func(t *testing.T) {
		// The previous jobs' quota slots are released just after they show
		// completed: createUnderQuota waits out a 429 in that moment.
		ids := []string{createUnderQuota(t, s, admin, bigRoom), createUnderQuota(t, s, admin, "GENERAL"), createUnderQuota(t, s, admin, bigRoom)}
		all = append(all, ids...)
		waitProcessing(t, s, admin, ids[0])
		// Lose the node that leads the task stream, the worst case for work
		// in flight.
		info, err := stream.Info(t.Context())
		require.NoError(t, err)
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
		f.faults++
		jobs := waitAllCompleted(t, s, admin, ids, 3*time.Minute)
		check(jobs, ids[0])
		check(jobs, ids[2])
	})

	jobs := waitAllCompleted(t, s, admin, all, time.Minute)
	completed := completedEvents(t, js)
	for _, id := range all {
		if jobs[id].State != "completed" {
			f.lost++
		}
		assert.Equal(t, 1, completed[id], "one completion event for %s", id)
	}
	f.jobs = len(all)
	f.log(t, "cluster-leader-change-and-node-loss")
}

// leaderOf names the current leader of the stream or consumer a stepdown
// subject addresses.
func leaderOf(t *testing.T, js jetstream.JetStream, stepdown string) string {
	t.Helper()
	ctx := t.Context()
	parts := strings.Split(stepdown, ".")
	if parts[2] == "CONSUMER" {
		cons, err := js.Consumer(ctx, parts[len(parts)-2], parts[len(parts)-1])
		if err != nil {
			return ""
		}
		info, err := cons.Info(ctx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	str, err := js.Stream(ctx, parts[len(parts)-1])
	if err != nil {
		return ""
	}
	info, err := str.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}
