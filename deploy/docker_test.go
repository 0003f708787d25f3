package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

// stage is one FROM and the instructions after it.
type stage struct {
	from string
	name string
	ins  []instruction
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var stages []stage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			return
		}
		require.NotEmpty(t, stages, "%s: %s before FROM", path, in.cmd)
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	for _, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") {
			continue
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return stages
}

// execForm reports whether args are a JSON array (exec form), which needs no
// shell in the image.
func execForm(args string) ([]string, bool) {
	var v []string
	return v, json.Unmarshal([]byte(args), &v) == nil
}

var copyFromRepo = regexp.MustCompile(`^(?:--\S+\s+)*(.+)\s+(\S+)$`)

func TestDockerfiles(t *testing.T) {
	type image struct {
		name string
		// module is where `go build` runs, relative to the repository root.
		module string
		// port is the listen port of the service's HTTP server (0: none),
		// as compose.yaml configures it.
		port int
	}
	p, err := loadCompose(t, composeSecrets)
	require.NoError(t, err)
	var images []image
	for _, s := range services {
		_, port := hostPort(t, *p.Services[s.name].Environment[s.addrVar])
		images = append(images, image{name: s.name, module: s.dir, port: port})
	}
	images = append(images, image{name: "seed", module: "shared"})
	for _, img := range images {
		t.Run(img.name, func(t *testing.T) {
			path := filepath.Join("docker", img.name+".Dockerfile")
			stages := parseDockerfile(t, path)
			require.GreaterOrEqual(t, len(stages), 2, "multi-stage: build and runtime")
			build, final := stages[0], stages[len(stages)-1]
			assert.Regexp(t, `^golang:1\.26(\.\d+)?$`, build.from, "the Go the project pins")
			assert.Equal(t, "gcr.io/distroless/static-debian12:nonroot", final.from)

			var runs, copies []string
			for _, in := range build.ins {
				switch in.cmd {
				case "RUN":
					runs = append(runs, in.args)
				case "COPY":
					copies = append(copies, in.args)
				}
			}
			run := strings.Join(runs, "\n")
			for _, want := range []string{"CGO_ENABLED=0", "GOWORK=off", "-trimpath", "cd " + img.module, "-X main.version=${VERSION}"} {
				assert.Contains(t, run, want)
			}
			// The one version scheme: the build names itself (make images
			// passes git describe), the binary reports it.
			var args []string
			for _, in := range build.ins {
				if in.cmd == "ARG" {
					args = append(args, in.args)
				}
			}
			assert.Contains(t, args, "VERSION=dev")
			// Everything copied into the build exists in the context.
			for _, c := range copies {
				m := copyFromRepo.FindStringSubmatch(c)
				require.NotNil(t, m, c)
				for _, src := range strings.Fields(m[1]) {
					_, err := os.Stat(filepath.Join(repoRoot, src))
					assert.NoError(t, err, "COPY %s: not in the build context", src)
				}
			}
			// The module's replace lines point at folders the build copied.
			gomod, err := os.ReadFile(filepath.Join(repoRoot, img.module, "go.mod"))
			require.NoError(t, err)
			for _, m := range regexp.MustCompile(`=>\s*(\.\S*)`).FindAllStringSubmatch(string(gomod), -1) {
				dir := filepath.ToSlash(filepath.Clean(filepath.Join(img.module, m[1])))
				assert.Contains(t, strings.Join(copies, "\n"), dir+"/", "replace %s: copy it into the build", dir)
			}

			var user, entrypoint, expose, health string
			for _, in := range final.ins {
				switch in.cmd {
				case "USER":
					user = in.args
				case "ENTRYPOINT":
					entrypoint = in.args
				case "EXPOSE":
					expose = in.args
				case "HEALTHCHECK":
					health = in.args
				case "RUN", "SHELL":
					t.Errorf("%s in the runtime stage: distroless has no shell", in.cmd)
				}
			}
			uid, _, _ := strings.Cut(user, ":")
			assert.Contains(t, []string{"nonroot", "65532"}, uid, "runs as distroless's nonroot user")
			ep, ok := execForm(entrypoint)
			assert.True(t, ok, "ENTRYPOINT in exec form: %s", entrypoint)
			assert.Equal(t, []string{"/dataport-" + img.name}, ep)

			if img.port == 0 {
				assert.Empty(t, expose)
				return
			}
			assert.Equal(t, strconv.Itoa(img.port), expose)
			_, cmd, ok := strings.Cut(health, "CMD ")
			require.True(t, ok, "HEALTHCHECK ... CMD: %q", health)
			hc, ok := execForm(cmd)
			require.True(t, ok, "HEALTHCHECK CMD in exec form: %s", cmd)
			assert.Equal(t, []string{"/healthcheck", "http://127.0.0.1:" + strconv.Itoa(img.port) + "/readyz"}, hc)
		})
	}
}
