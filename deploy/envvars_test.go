package deploy_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// repoRoot is the repository root, relative to this module.
const repoRoot = ".."

// service describes one of the five Dataport services as the deployment
// sees it.
type service struct {
	name string
	// addrVar is the variable holding the address of the service's
	// /healthz and /readyz (the gateway serves them on its API port).
	addrVar string
	// dir is the service's module, relative to the repository root.
	dir string
}

var services = []service{
	{name: "gateway", addrVar: "DATAPORT_HTTP_ADDR", dir: "services/gateway"},
	{name: "room-exporter", addrVar: "DATAPORT_HEALTH_ADDR", dir: "services/room-exporter"},
	{name: "record-exporter", addrVar: "DATAPORT_HEALTH_ADDR", dir: "services/record-exporter"},
	{name: "archiver", addrVar: "DATAPORT_HEALTH_ADDR", dir: "services/archiver"},
	{name: "notifier", addrVar: "DATAPORT_HEALTH_ADDR", dir: "services/notifier"},
}

// commonDirs hold the variables every service reads: config.LoadCommon and
// infra.LoadTopology, which every run calls.
var commonDirs = []string{"shared/config", "shared/infra"}

// callerOnly are functions of the shared packages, by package folder and
// name, that only some programs call: the variables they read count for a
// program only when its code calls them, directly or through another of
// them (infra.LoadTaskSigner: the gateway signs tasks and the two
// exporters verify them, through infra.RunExporter; the archiver, notifier
// and seeder need no task key and read no exporter settings).
var callerOnly = map[string][]string{
	"shared/infra": {"LoadTaskSigner", "RunExporter"},
}

// taskKeyHolders are the services that hold the task keys: the gateway
// signs tasks, the exporters verify them.
var taskKeyHolders = []string{"gateway", "room-exporter", "record-exporter"}

// exporters are the services that take export tasks, each from its own
// durable consumer on EXPORT_TASKS (shared/bus/topology.go), so each
// scales on its own queue.
var exporters = []struct{ name, consumerConst string }{
	{"room-exporter", "ConsumerRoomExporter"},
	{"record-exporter", "ConsumerRecordExporter"},
}

var envVarName = regexp.MustCompile(`^DATAPORT_[A-Z0-9_]+$`)

// sharedModule and its import path prefix: imports under it are followed,
// because a shared package may read variables for the service.
const sharedImport = "dataport.dev/shared/"

// codeVars returns the DATAPORT_ variables a program reads: every string
// literal naming one in the non-test Go files under dirs (relative to the
// repository root), in the shared packages those files import (followed
// transitively), and in the common packages, except those read in a
// callerOnly function the program does not call, and except test-helper
// packages (a folder named *test). Comments do not count, so
// the examples in package docs are not taken for variables.
func codeVars(t *testing.T, dirs ...string) []string {
	t.Helper()
	vars := map[string]bool{}
	seen := map[string]bool{}
	// gated holds the variables of callerOnly functions and called the
	// functions some visited file calls, both by "folder.Func".
	gated := map[string][]string{}
	called := map[string]bool{}
	// inner holds, by "folder.Func", the callerOnly functions of the same
	// folder a callerOnly function calls.
	inner := map[string][]string{}
	envLits := func(n ast.Node, found func(string)) {
		ast.Inspect(n, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if s, err := strconv.Unquote(lit.Value); err == nil && envVarName.MatchString(s) {
				found(s)
			}
			return true
		})
	}
	var visit func(dir string, recursive bool)
	visit = func(dir string, recursive bool) {
		// Test-helper packages (bustest, blobtest, infratest, gatewaytest:
		// named like net/http/httptest) are imported only by tests; what
		// they read configures a test, not the program.
		if seen[dir] || strings.HasSuffix(filepath.Base(dir), "test") {
			return
		}
		seen[dir] = true
		abs := filepath.Join(repoRoot, dir)
		entries, err := os.ReadDir(abs)
		require.NoError(t, err, "source folder %s", dir)
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() {
				if recursive && name != "testdata" && !strings.HasPrefix(name, ".") {
					visit(filepath.Join(dir, name), true)
				}
				continue
			}
			if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(abs, name), nil, parser.SkipObjectResolution)
			require.NoError(t, err)
			// The shared packages this file imports, by the name it uses.
			sharedDirs := map[string]string{}
			for _, imp := range f.Imports {
				path, err := strconv.Unquote(imp.Path.Value)
				require.NoError(t, err)
				if rest, ok := strings.CutPrefix(path, sharedImport); ok {
					visit(filepath.Join("shared", rest), false)
					local := filepath.Base(rest)
					if imp.Name != nil {
						local = imp.Name.Name
					}
					sharedDirs[local] = filepath.ToSlash(filepath.Join("shared", rest))
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok {
					if x, ok := sel.X.(*ast.Ident); ok && sharedDirs[x.Name] != "" {
						called[sharedDirs[x.Name]+"."+sel.Sel.Name] = true
					}
				}
				return true
			})
			for _, decl := range f.Decls {
				if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && slices.Contains(callerOnly[filepath.ToSlash(dir)], fn.Name.Name) {
					key := filepath.ToSlash(dir) + "." + fn.Name.Name
					envLits(fn, func(s string) { gated[key] = append(gated[key], s) })
					ast.Inspect(fn, func(n ast.Node) bool {
						if c, ok := n.(*ast.CallExpr); ok {
							if id, ok := c.Fun.(*ast.Ident); ok && slices.Contains(callerOnly[filepath.ToSlash(dir)], id.Name) {
								inner[key] = append(inner[key], filepath.ToSlash(dir)+"."+id.Name)
							}
						}
						return true
					})
					continue
				}
				envLits(decl, func(s string) { vars[s] = true })
			}
		}
	}
	for _, d := range commonDirs {
		visit(d, false)
	}
	for _, d := range dirs {
		visit(d, true)
	}
	for changed := true; changed; {
		changed = false
		for fn, callees := range inner {
			for _, c := range callees {
				if called[fn] && !called[c] {
					called[c], changed = true, true
				}
			}
		}
	}
	for fn, names := range gated {
		if called[fn] {
			for _, s := range names {
				vars[s] = true
			}
		}
	}
	out := make([]string, 0, len(vars))
	for v := range vars {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// hasMain reports whether a service's main.go exists yet. Until it does,
// the service's list of variables is incomplete, so variables the
// deployment sets but the code does not read are only logged.
func hasMain(dir string) bool {
	_, err := os.Stat(filepath.Join(repoRoot, dir, "main.go"))
	return err == nil
}

// checkVars checks that every variable the code reads is set, and that
// every DATAPORT_ variable set is read by the code (a misspelt name is
// silently ignored by the service, which then runs on its default).
func checkVars(t *testing.T, where string, want []string, set map[string]bool, complete bool) {
	t.Helper()
	for _, v := range want {
		if !set[v] {
			t.Errorf("%s: %s is read by the code but not set", where, v)
		}
	}
	for v := range set {
		if !envVarName.MatchString(v) || slices.Contains(want, v) {
			continue
		}
		if complete {
			t.Errorf("%s: %s is set but no code reads it (misspelt or obsolete?)", where, v)
		} else {
			t.Logf("%s: %s is set but not read by the code yet (its main.go is not there)", where, v)
		}
	}
}

func TestCodeVars(t *testing.T) {
	common := codeVars(t)
	// The scan must find the common variables; an empty list would make
	// every completeness check pass vacuously.
	for _, v := range []string{"DATAPORT_NATS_URL", "DATAPORT_S3_ENDPOINT", "DATAPORT_STREAM_REPLICAS", "DATAPORT_TASK_ACK_WAIT", "DATAPORT_SHUTDOWN_TIMEOUT"} {
		require.Contains(t, common, v)
	}
	// A documentation example in a comment is not a variable.
	require.NotContains(t, common, "DATAPORT_HTTP_PORT")
	// The task keys belong to the programs that call infra.LoadTaskSigner
	// (the gateway signs, the exporters verify), not to every one.
	require.NotContains(t, common, "DATAPORT_TASK_SECRET")
	for _, s := range services {
		reads := codeVars(t, s.dir)
		signs := slices.Contains(taskKeyHolders, s.name)
		for _, v := range []string{"DATAPORT_TASK_SECRET", "DATAPORT_TASK_PREVIOUS_SECRETS"} {
			require.Equal(t, signs, slices.Contains(reads, v), "%s reads %s", s.name, v)
		}
	}
	for _, s := range services {
		t.Logf("%s reads %v", s.name, codeVars(t, s.dir))
	}
}

// hostPort splits an address variable's value ("0.0.0.0:8080",
// "minio:9000" or "nats://nats:4222") into host and port.
func hostPort(t *testing.T, v string) (string, int) {
	t.Helper()
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		require.NoError(t, err, v)
		v = u.Host
	}
	host, port, err := net.SplitHostPort(v)
	require.NoError(t, err, v)
	n, err := strconv.Atoi(port)
	require.NoError(t, err, v)
	return host, n
}
