package deploy_test

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"sigs.k8s.io/yaml"
)

const (
	rulesFile     = "observability/prometheus-rules.yaml"
	dashboardFile = "observability/grafana-dashboard.json"
	runbookFile   = "docs/OBSERVABILITY.md"
	modulePrefix  = "dataport.dev/"
)

// instrument is one metric instrument the code creates.
type instrument struct {
	method, name, unit, at string
}

// instrumentMethods are the metric.Meter methods that create instruments.
var instrumentMethods = map[string]bool{
	"Int64Counter": true, "Float64Counter": true, "Int64UpDownCounter": true, "Float64UpDownCounter": true,
	"Int64Histogram": true, "Float64Histogram": true, "Int64Gauge": true, "Float64Gauge": true,
	"Int64ObservableCounter": true, "Float64ObservableCounter": true,
	"Int64ObservableUpDownCounter": true, "Float64ObservableUpDownCounter": true,
	"Int64ObservableGauge": true, "Float64ObservableGauge": true,
}

// codeInstruments finds every instrument created in the non-test Go code
// of the services and shared packages: calls of a Meter's instrument
// methods, with the name as a string literal or a string constant (of the
// same package or an imported dataport package) and the unit from
// metric.WithUnit. Names built at run time cannot be resolved and are
// returned apart, so the caller can tell they are not covered.
func codeInstruments(t *testing.T) (found []instrument, dynamic []string) {
	t.Helper()
	type file struct {
		dir  string
		f    *ast.File
		path string
	}
	var files []file
	consts := map[string]map[string]string{} // package dir → constant → value
	fset := token.NewFileSet()
	for _, top := range []string{"services", "shared"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, top), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			// Test-helper packages (bustest, gatewaytest: named like
			// httptest) serve tests only; what they create is no metric of a
			// running service.
			if d.IsDir() && (d.Name() == "testdata" || d.Name() == "gen" || d.Name() == "node_modules" || strings.HasSuffix(d.Name(), "test")) {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(repoRoot, filepath.Dir(path))
			if err != nil {
				return err
			}
			dir := filepath.ToSlash(rel)
			files = append(files, file{dir: dir, f: f, path: path})
			if consts[dir] == nil {
				consts[dir] = map[string]string{}
			}
			for _, decl := range f.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, name := range vs.Names {
						if i < len(vs.Values) {
							if s, ok := stringLit(vs.Values[i]); ok {
								consts[dir][name.Name] = s
							}
						}
					}
				}
			}
			return nil
		})
		require.NoError(t, err)
	}

	for _, fl := range files {
		imports := map[string]string{} // package name → dir
		for _, im := range fl.f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if !strings.HasPrefix(p, modulePrefix) {
				continue
			}
			name := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			imports[name] = strings.TrimPrefix(p, modulePrefix)
		}
		resolve := func(e ast.Expr) (string, bool) {
			switch e := e.(type) {
			case *ast.BasicLit:
				return stringLit(e)
			case *ast.Ident:
				s, ok := consts[fl.dir][e.Name]
				return s, ok
			case *ast.SelectorExpr:
				if pkg, ok := e.X.(*ast.Ident); ok {
					s, ok := consts[imports[pkg.Name]][e.Sel.Name]
					return s, ok
				}
			}
			return "", false
		}
		ast.Inspect(fl.f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !instrumentMethods[sel.Sel.Name] || len(call.Args) == 0 {
				return true
			}
			at := fset.Position(call.Pos()).String()
			name, ok := resolve(call.Args[0])
			if !ok {
				dynamic = append(dynamic, at)
				return true
			}
			in := instrument{method: sel.Sel.Name, name: name, at: at}
			for _, arg := range call.Args[1:] {
				opt, ok := arg.(*ast.CallExpr)
				if !ok {
					continue
				}
				if s, ok := opt.Fun.(*ast.SelectorExpr); ok && s.Sel.Name == "WithUnit" && len(opt.Args) == 1 {
					in.unit, _ = resolve(opt.Args[0])
				}
			}
			found = append(found, in)
			return true
		})
	}
	return found, dynamic
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// exposedNames creates the instruments on a meter provider with the
// Prometheus exporter the services use (shared/telemetry) and returns the
// series names a scrape shows: counters with _total, units as suffixes,
// histograms as _bucket, _sum and _count.
func exposedNames(t *testing.T, ins []instrument) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutTargetInfo(), otelprom.WithoutScopeInfo())
	require.NoError(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	m := mp.Meter("deploy-test")
	ctx := context.Background()
	var observables []metric.Observable
	for _, in := range ins {
		unit := metric.WithUnit(in.unit)
		var err error
		switch in.method {
		case "Int64Counter", "Int64UpDownCounter":
			var c metric.Int64Counter
			if in.method == "Int64Counter" {
				c, err = m.Int64Counter(in.name, unit)
				if err == nil {
					c.Add(ctx, 1)
				}
			} else {
				var u metric.Int64UpDownCounter
				if u, err = m.Int64UpDownCounter(in.name, unit); err == nil {
					u.Add(ctx, 1)
				}
			}
		case "Float64Counter":
			var c metric.Float64Counter
			if c, err = m.Float64Counter(in.name, unit); err == nil {
				c.Add(ctx, 1)
			}
		case "Float64UpDownCounter":
			var c metric.Float64UpDownCounter
			if c, err = m.Float64UpDownCounter(in.name, unit); err == nil {
				c.Add(ctx, 1)
			}
		case "Int64Histogram":
			var h metric.Int64Histogram
			if h, err = m.Int64Histogram(in.name, unit); err == nil {
				h.Record(ctx, 1)
			}
		case "Float64Histogram":
			var h metric.Float64Histogram
			if h, err = m.Float64Histogram(in.name, unit); err == nil {
				h.Record(ctx, 1)
			}
		case "Int64Gauge":
			var g metric.Int64Gauge
			if g, err = m.Int64Gauge(in.name, unit); err == nil {
				g.Record(ctx, 1)
			}
		case "Float64Gauge":
			var g metric.Float64Gauge
			if g, err = m.Float64Gauge(in.name, unit); err == nil {
				g.Record(ctx, 1)
			}
		case "Int64ObservableCounter":
			var o metric.Int64ObservableCounter
			o, err = m.Int64ObservableCounter(in.name, unit)
			observables = append(observables, o)
		case "Float64ObservableCounter":
			var o metric.Float64ObservableCounter
			o, err = m.Float64ObservableCounter(in.name, unit)
			observables = append(observables, o)
		case "Int64ObservableUpDownCounter":
			var o metric.Int64ObservableUpDownCounter
			o, err = m.Int64ObservableUpDownCounter(in.name, unit)
			observables = append(observables, o)
		case "Float64ObservableUpDownCounter":
			var o metric.Float64ObservableUpDownCounter
			o, err = m.Float64ObservableUpDownCounter(in.name, unit)
			observables = append(observables, o)
		case "Int64ObservableGauge":
			var o metric.Int64ObservableGauge
			o, err = m.Int64ObservableGauge(in.name, unit)
			observables = append(observables, o)
		case "Float64ObservableGauge":
			var o metric.Float64ObservableGauge
			o, err = m.Float64ObservableGauge(in.name, unit)
			observables = append(observables, o)
		}
		require.NoError(t, err, "%s at %s", in.name, in.at)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, ob := range observables {
			switch ob := ob.(type) {
			case metric.Int64Observable:
				o.ObserveInt64(ob, 1)
			case metric.Float64Observable:
				o.ObserveFloat64(ob, 1)
			}
		}
		return nil
	}, observables...)
	require.NoError(t, err)

	families, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

// grafanaVars stands in for the variables Grafana replaces before a query
// reaches Prometheus.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

var (
	promStrings  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promBraces   = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promWords    = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
)

// metricsOf returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping
// clauses are taken out, other than function names (followed by "(") and
// keywords. It is no PromQL parser; `promtool check rules` checks the
// syntax where Prometheus runs. It fails on unbalanced brackets, which
// would hide selectors.
func metricsOf(t *testing.T, expr string) []string {
	t.Helper()
	e := promStrings.ReplaceAllString(grafanaVars.Replace(expr), `""`)
	for _, pair := range []string{"()", "{}", "[]"} {
		require.Equal(t, strings.Count(e, pair[:1]), strings.Count(e, pair[1:]), "unbalanced %s in %s", pair, expr)
	}
	e = promBraces.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, at := range promIdent.FindAllStringIndex(e, -1) {
		word := e[at[0]:at[1]]
		if at[0] > 0 && strings.ContainsRune("0123456789.", rune(e[at[0]-1])) {
			continue // the unit of a duration or a number's exponent
		}
		if promWords[word] || strings.HasPrefix(strings.TrimLeft(e[at[1]:], " \t\n"), "(") {
			continue
		}
		names = append(names, word)
	}
	return names
}

// TestMetricsOf: the scanner finds the selectors of the expressions the
// rules and the dashboard use, and nothing else.
func TestMetricsOf(t *testing.T) {
	for expr, want := range map[string][]string{
		`max(a_seconds) > 600 or sum(increase(b_total[15m])) > 0`:                                         {"a_seconds", "b_total"},
		`max by (g) (x) > 100 and max by (g) (deriv(x[10m])) > 0`:                                         {"x", "x"},
		`sum(rate(c_total{state="failed",x=~"a|b"}[15m])) / sum(rate(c_total{s='{}'}[$__rate_interval]))`: {"c_total", "c_total"},
		`histogram_quantile(0.95, sum by (le, stage) (rate(h_bucket[5m]))) * 60`:                          {"h_bucket"},
		`sum by (channel) (increase(n_total{outcome="given_up"}[30m])) > 0`:                               {"n_total"},
		`up`: {"up"},
	} {
		assert.Equal(t, want, metricsOf(t, expr), expr)
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// dashboardExprs returns every "expr" string anywhere in the dashboard,
// keyed by the title of the panel holding it.
func dashboardExprs(t *testing.T, v any, title string, out map[string][]string) {
	switch v := v.(type) {
	case map[string]any:
		if s, ok := v["title"].(string); ok {
			title = s
		}
		for k, child := range v {
			if s, ok := child.(string); ok && k == "expr" {
				out[title] = append(out[title], s)
				continue
			}
			dashboardExprs(t, child, title, out)
		}
	case []any:
		for _, child := range v {
			dashboardExprs(t, child, title, out)
		}
	}
}

// TestObservabilityNamesOnlyRegisteredMetrics: every metric the alert
// rules and the Grafana dashboard query is one the code registers, under
// the name the Prometheus exporter gives it; every alert has a severity,
// a summary and a runbook entry in docs/OBSERVABILITY.md; and the
// dashboard covers throughput, backlog, stage latency and failures.
func TestObservabilityNamesOnlyRegisteredMetrics(t *testing.T) {
	ins, dynamic := codeInstruments(t)
	for _, at := range dynamic {
		t.Logf("instrument with a name built at run time (not checked): %s", at)
	}
	require.NotEmpty(t, ins, "no instruments found in the code")
	known := exposedNames(t, ins)

	var rules ruleFile
	raw, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(raw, &rules))
	runbook, err := os.ReadFile(filepath.Join(repoRoot, runbookFile))
	require.NoError(t, err)
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ +(\S+)\s*$`).FindAllStringSubmatch(string(runbook), -1) {
		headings[m[1]] = true
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "group %s: a rule without an alert name", g.Name)
			alerts = append(alerts, r.Alert)
			names := metricsOf(t, r.Expr)
			assert.NotEmpty(t, names, "%s queries no metric", r.Alert)
			for _, n := range names {
				assert.True(t, known[n], "alert %s: metric %s is not registered by the code", r.Alert, n)
			}
			assert.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], "%s severity", r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], "%s summary", r.Alert)
			assert.Equal(t, runbookFile+"#"+strings.ToLower(r.Alert), r.Annotations["runbook_url"], "%s runbook", r.Alert)
			assert.True(t, headings[r.Alert], "%s has no runbook heading in %s", r.Alert, runbookFile)
		}
	}
	for _, want := range []string{"DataportExportsStuck", "DataportConsumerBacklogGrowing", "DataportExportFailureRate", "DataportNotificationsFailing"} {
		assert.Contains(t, alerts, want)
	}

	raw, err = os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash any
	require.NoError(t, json.Unmarshal(raw, &dash))
	exprs := map[string][]string{}
	dashboardExprs(t, dash, "", exprs)
	require.NotEmpty(t, exprs)
	for title, list := range exprs {
		for _, e := range list {
			names := metricsOf(t, e)
			assert.NotEmpty(t, names, "panel %q queries no metric", title)
			for _, n := range names {
				assert.True(t, known[n], "panel %q: metric %s is not registered by the code", title, n)
			}
		}
	}
	var titles []string
	for title := range exprs {
		titles = append(titles, strings.ToLower(title))
	}
	for _, topic := range []string{"exports requested", "backlog", "stage duration", "failed"} {
		assert.True(t, slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, topic) }), "dashboard has no %q panel", topic)
	}
}
