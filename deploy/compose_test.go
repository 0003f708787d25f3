package deploy_test

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// loadCompose loads compose.yaml as `docker compose config` does: schema
// validation, interpolation with env, merge keys, profiles (all enabled, so
// the seeder is checked too).
func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	details := types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "compose.yaml")}},
		Environment: env,
	}
	return loader.LoadWithContext(t.Context(), details, func(o *loader.Options) {
		o.SetProjectName("dataport", true)
		o.Profiles = []string{"*"}
	})
}

// composeSecrets are the variables `docker compose up` needs: the signing
// keys, which have no default.
var composeSecrets = map[string]string{
	"DATAPORT_LINK_SECRET":    "test-link-secret",
	"DATAPORT_WEBHOOK_SECRET": "test-webhook-secret",
	"DATAPORT_TASK_SECRET":    "test-task-secret",
}

// TestComposeNeedsSigningSecrets: compose runs the services as production,
// where they refuse default keys, so it stops at once with a message naming
// each missing key instead of starting services that then exit.
func TestComposeNeedsSigningSecrets(t *testing.T) {
	for _, missing := range []string{"DATAPORT_LINK_SECRET", "DATAPORT_WEBHOOK_SECRET", "DATAPORT_TASK_SECRET"} {
		env := map[string]string{}
		for k, v := range composeSecrets {
			if k != missing {
				env[k] = v
			}
		}
		_, err := loadCompose(t, env)
		require.Error(t, err, "a missing %s must stop `docker compose up`", missing)
		assert.Contains(t, err.Error(), missing)
	}
}

func TestCompose(t *testing.T) {
	p, err := loadCompose(t, composeSecrets)
	require.NoError(t, err)

	t.Run("production by default", func(t *testing.T) {
		for _, svc := range services {
			env := p.Services[svc.name].Environment
			require.NotNil(t, env["DATAPORT_ENV"], svc.name)
			assert.Equal(t, "production", *env["DATAPORT_ENV"], "%s: compose is a deployment, not a developer machine", svc.name)
		}
		webhook := p.Services["notifier"].Environment["DATAPORT_WEBHOOK_SECRET"]
		require.NotNil(t, webhook)
		assert.Equal(t, "test-webhook-secret", *webhook, "the webhook key comes from the environment, with no default")
	})

	names := slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	})
	assert.Equal(t, []string{"archiver", "gateway", "mailpit", "minio", "minio-init", "nats", "notifier", "record-exporter", "room-exporter", "seed"}, names)

	oneShot := func(s types.ServiceConfig) bool { return s.Restart == "no" }

	t.Run("healthchecks and depends_on", func(t *testing.T) {
		for name, s := range p.Services {
			if oneShot(s) {
				continue
			}
			if assert.NotNil(t, s.HealthCheck, "%s: healthcheck", name) {
				assert.False(t, s.HealthCheck.Disable, "%s: healthcheck disabled", name)
				assert.NotEmpty(t, s.HealthCheck.Test, "%s: healthcheck test", name)
				assert.Equal(t, "CMD", s.HealthCheck.Test[0], "%s: exec-form healthcheck (no shell needed)", name)
			}
		}
		for name, s := range p.Services {
			for dep, cond := range s.DependsOn {
				d, ok := p.Services[dep]
				require.True(t, ok, "%s depends on unknown %s", name, dep)
				want := types.ServiceConditionHealthy
				if oneShot(d) {
					want = types.ServiceConditionCompletedSuccessfully
				}
				assert.Equal(t, want, cond.Condition, "%s depends_on %s", name, dep)
			}
		}
	})

	t.Run("ports", func(t *testing.T) {
		for name, s := range p.Services {
			published := slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool { return pc.Published != "" })
			assert.Equal(t, name == "gateway" || name == "mailpit", published, "%s: only the gateway and the Mailpit UI publish ports", name)
		}
	})

	t.Run("infrastructure", func(t *testing.T) {
		nats := p.Services["nats"]
		assert.Subset(t, []string(nats.Command), []string{"-js", "-sd", "/data"}, "JetStream on the volume")
		assert.True(t, hasVolume(nats, "/data"), "NATS data on a named volume")
		assert.True(t, hasVolume(p.Services["minio"], "/data"), "MinIO data on a named volume")
		init := p.Services["minio-init"]
		script := strings.Join(append(append([]string{}, init.Entrypoint...), init.Command...), " ")
		env := p.Services["gateway"].Environment
		for _, b := range []string{"DATAPORT_EXPORT_BUCKET", "DATAPORT_ASSET_BUCKET"} {
			assert.Contains(t, script, "local/"+*env[b], "minio-init creates %s", b)
		}
	})

	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			s, ok := p.Services[svc.name]
			require.True(t, ok)
			require.NotNil(t, s.Build)
			assert.Equal(t, "deploy/docker/"+svc.name+".Dockerfile", s.Build.Dockerfile)
			root, _ := filepath.Abs(repoRoot)
			assert.Equal(t, root, s.Build.Context, "the build context is the repository root")
			assert.Equal(t, svc.name, imageRepo(s.Image))

			set := map[string]bool{}
			env := map[string]string{}
			for k, v := range s.Environment {
				if v != nil {
					set[k], env[k] = true, *v
				}
			}
			checkVars(t, "compose service "+svc.name, codeVars(t, svc.dir), set, hasMain(svc.dir))

			// The healthcheck probes the address the service listens on.
			_, port := hostPort(t, env[svc.addrVar])
			require.NotNil(t, s.HealthCheck)
			assert.Equal(t, []string{"CMD", "/healthcheck", "http://127.0.0.1:" + strconv.Itoa(port) + "/readyz"}, []string(s.HealthCheck.Test))

			// Configured addresses name compose services.
			for _, v := range []string{"DATAPORT_NATS_URL", "DATAPORT_S3_ENDPOINT"} {
				host, _ := hostPort(t, env[v])
				assert.Contains(t, p.Services, host, "%s=%s", v, env[v])
			}
			if h, ok := env["DATAPORT_SMTP_HOST"]; ok {
				assert.Contains(t, p.Services, h, "DATAPORT_SMTP_HOST")
			}
			want := map[string]string{"nats": types.ServiceConditionHealthy, "minio": types.ServiceConditionHealthy, "minio-init": types.ServiceConditionCompletedSuccessfully}
			if svc.name == "notifier" {
				want["mailpit"] = types.ServiceConditionHealthy
			}
			got := map[string]string{}
			for dep, cond := range s.DependsOn {
				got[dep] = cond.Condition
			}
			assert.Equal(t, want, got, "depends_on")

			// Docker kills after stop_grace_period (10s by default).
			require.NotNil(t, s.StopGracePeriod)
			grace := time.Duration(*s.StopGracePeriod)
			assert.Greater(t, grace, duration(t, env, "DATAPORT_SHUTDOWN_TIMEOUT"), "stop_grace_period vs shutdown timeout")
			assert.Greater(t, grace, duration(t, env, "DATAPORT_TASK_ACK_WAIT"), "stop_grace_period vs task ack wait")

			assert.True(t, s.ReadOnly, "read-only root filesystem")
			assert.Contains(t, s.CapDrop, "ALL")
			assert.Contains(t, s.SecurityOpt, "no-new-privileges:true")
			assert.Empty(t, s.User, "the image's non-root user applies")
		})
	}

	t.Run("exporter replicas", func(t *testing.T) {
		for name, replicas := range map[string]int{"room-exporter": 3, "record-exporter": 2} {
			s := p.Services[name]
			assert.Equal(t, replicas, s.GetScale(), name)
			assert.Empty(t, s.ContainerName, "%s: replicas need generated names", name)
			assert.Empty(t, s.Ports, "%s: replicas cannot share a published port", name)
		}
	})

	t.Run("links agree", func(t *testing.T) {
		gw, nt := p.Services["gateway"].Environment, p.Services["notifier"].Environment
		for _, v := range []string{"DATAPORT_PUBLIC_URL", "DATAPORT_LINK_SECRET", "DATAPORT_LINK_TTL"} {
			require.NotNil(t, gw[v], v)
			require.NotNil(t, nt[v], v)
			assert.Equal(t, *gw[v], *nt[v], "gateway and notifier must agree on %s", v)
		}
		assert.Equal(t, "test-link-secret", *gw["DATAPORT_LINK_SECRET"])
	})

	t.Run("task keys agree", func(t *testing.T) {
		gw := p.Services["gateway"].Environment
		for _, name := range taskKeyHolders[1:] {
			ex := p.Services[name].Environment
			for _, v := range []string{"DATAPORT_TASK_SECRET", "DATAPORT_TASK_PREVIOUS_SECRETS"} {
				require.NotNil(t, gw[v], v)
				require.NotNil(t, ex[v], "%s: %s", name, v)
				assert.Equal(t, *gw[v], *ex[v], "gateway and %s must agree on %s", name, v)
			}
		}
		assert.Equal(t, "test-task-secret", *gw["DATAPORT_TASK_SECRET"], "the task key comes from the environment, with no default")
	})

	t.Run("seed", func(t *testing.T) {
		s := p.Services["seed"]
		assert.Equal(t, []string{"seed"}, s.Profiles, "the seeder runs on demand only")
		require.NotNil(t, s.Build)
		assert.Equal(t, "deploy/docker/seed.Dockerfile", s.Build.Dockerfile)
		set := map[string]bool{}
		for k, v := range s.Environment {
			set[k] = v != nil
		}
		checkVars(t, "compose service seed", codeVars(t, "shared/cmd/dataport-seed"), set, true)
	})
}

func hasVolume(s types.ServiceConfig, target string) bool {
	return slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Target == target
	})
}
