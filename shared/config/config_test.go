package config_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/config"
)

// env returns a getenv backed by a map.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadCommon(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want config.Common
	}{
		{
			name: "defaults",
			env:  nil,
			want: config.Common{
				Env:             config.EnvProduction,
				NATSURL:         "nats://127.0.0.1:4222",
				S3Endpoint:      "127.0.0.1:9000",
				S3AccessKey:     "minioadmin",
				S3SecretKey:     "minioadmin",
				S3Region:        "us-east-1",
				S3UseTLS:        false,
				ExportBucket:    "dataport-exports",
				AssetBucket:     "dataport-assets",
				StreamReplicas:  1,
				LogLevel:        "info",
				ShutdownTimeout: 25 * time.Second,
			},
		},
		{
			name: "from the environment",
			env: map[string]string{
				"DATAPORT_NATS_URL":         "nats://nats.dataport.svc:4222",
				"DATAPORT_S3_ENDPOINT":      "minio:9000",
				"DATAPORT_S3_ACCESS_KEY":    "ak",
				"DATAPORT_S3_SECRET_KEY":    "sk",
				"DATAPORT_S3_REGION":        "eu-west-1",
				"DATAPORT_S3_USE_TLS":       "YES",
				"DATAPORT_EXPORT_BUCKET":    "exp",
				"DATAPORT_ASSET_BUCKET":     "ast",
				"DATAPORT_STREAM_REPLICAS":  "3",
				"DATAPORT_LOG_LEVEL":        "debug",
				"DATAPORT_SHUTDOWN_TIMEOUT": "1m",
				"DATAPORT_ENV":              "development",
			},
			want: config.Common{
				Env:             config.EnvDevelopment,
				NATSURL:         "nats://nats.dataport.svc:4222",
				S3Endpoint:      "minio:9000",
				S3AccessKey:     "ak",
				S3SecretKey:     "sk",
				S3Region:        "eu-west-1",
				S3UseTLS:        true,
				ExportBucket:    "exp",
				AssetBucket:     "ast",
				StreamReplicas:  3,
				LogLevel:        "debug",
				ShutdownTimeout: time.Minute,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := config.New(env(tt.env))
			c := config.LoadCommon(l)
			require.NoError(t, l.Err())
			assert.Equal(t, tt.want, c)
		})
	}
}

func TestLoaderValidValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value string
		load  func(l *config.Loader) any
		want  any
	}{
		{"string set", "x", func(l *config.Loader) any { return l.String("V", "def", "") }, "x"},
		{"string empty uses default", "", func(l *config.Loader) any { return l.String("V", "def", "") }, "def"},
		{"string blank uses default", "  ", func(l *config.Loader) any { return l.String("V", "def", "") }, "def"},
		{"required set", "x", func(l *config.Loader) any { return l.Required("V", "") }, "x"},
		{"secret set", "s3cr3t", func(l *config.Loader) any { return l.Secret("V", "", "") }, "s3cr3t"},
		{"secret empty uses default", "", func(l *config.Loader) any { return l.Secret("V", "d", "") }, "d"},
		{"int", "42", func(l *config.Loader) any { return l.Int("V", 1, 0, 100, "") }, 42},
		{"int negative", "-3", func(l *config.Loader) any { return l.Int("V", 1, -5, 5, "") }, -3},
		{"int at min", "0", func(l *config.Loader) any { return l.Int("V", 1, 0, 100, "") }, 0},
		{"int at max", "100", func(l *config.Loader) any { return l.Int("V", 1, 0, 100, "") }, 100},
		{"int padded", " 7 ", func(l *config.Loader) any { return l.Int("V", 1, 0, 100, "") }, 7},
		{"int empty uses default", "", func(l *config.Loader) any { return l.Int("V", 9, 0, 100, "") }, 9},
		{"bool true", "true", func(l *config.Loader) any { return l.Bool("V", false, "") }, true},
		{"bool TRUE", "TRUE", func(l *config.Loader) any { return l.Bool("V", false, "") }, true},
		{"bool 1", "1", func(l *config.Loader) any { return l.Bool("V", false, "") }, true},
		{"bool Yes", "Yes", func(l *config.Loader) any { return l.Bool("V", false, "") }, true},
		{"bool false", "False", func(l *config.Loader) any { return l.Bool("V", true, "") }, false},
		{"bool 0", "0", func(l *config.Loader) any { return l.Bool("V", true, "") }, false},
		{"bool no", "NO", func(l *config.Loader) any { return l.Bool("V", true, "") }, false},
		{"bool empty uses default", "", func(l *config.Loader) any { return l.Bool("V", true, "") }, true},
		{"duration", "1m30s", func(l *config.Loader) any { return l.Duration("V", time.Second, "") }, 90 * time.Second},
		{"duration empty uses default", "", func(l *config.Loader) any { return l.Duration("V", time.Second, "") }, time.Second},
		{"enum", "b", func(l *config.Loader) any { return l.Enum("V", "a", []string{"a", "b"}, "") }, "b"},
		{"enum empty uses default", "", func(l *config.Loader) any { return l.Enum("V", "a", []string{"a", "b"}, "") }, "a"},
		{"hostport", "minio:9000", func(l *config.Loader) any { return l.HostPort("V", "", "") }, "minio:9000"},
		{"hostport empty host", ":0", func(l *config.Loader) any { return l.HostPort("V", "", "") }, ":0"},
		{"hostport ipv6", "[::1]:65535", func(l *config.Loader) any { return l.HostPort("V", "", "") }, "[::1]:65535"},
		{"url", "https://example.com/x", func(l *config.Loader) any { return l.URL("V", "", "") }, "https://example.com/x"},
		{"url empty without default", "", func(l *config.Loader) any { return l.URL("V", "", "") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := config.New(env(map[string]string{"V": tt.value}))
			got := tt.load(l)
			require.NoError(t, l.Err())
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestLoaderBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		value   string
		load    func(l *config.Loader) any
		def     any // what the accessor returns on error
		wantMsg string
	}{
		{"required missing", "", func(l *config.Loader) any { return l.Required("DATAPORT_X", "") }, "", `DATAPORT_X: required but not set`},
		{"required blank", "   ", func(l *config.Loader) any { return l.Required("DATAPORT_X", "") }, "", `DATAPORT_X: required but not set`},
		{"int not a number", "abc", func(l *config.Loader) any { return l.Int("DATAPORT_X", 5, 0, 10, "") }, 5, `DATAPORT_X="abc": not an integer`},
		{"int float", "1.5", func(l *config.Loader) any { return l.Int("DATAPORT_X", 5, 0, 10, "") }, 5, `DATAPORT_X="1.5": not an integer`},
		{"int overflow", "99999999999999999999", func(l *config.Loader) any { return l.Int("DATAPORT_X", 5, 0, 10, "") }, 5, `DATAPORT_X="99999999999999999999": not an integer`},
		{"int below min", "0", func(l *config.Loader) any { return l.Int("DATAPORT_X", 5, 1, 10, "") }, 5, `DATAPORT_X="0": out of range [1, 10]`},
		{"int above max", "11", func(l *config.Loader) any { return l.Int("DATAPORT_X", 5, 1, 10, "") }, 5, `DATAPORT_X="11": out of range [1, 10]`},
		{"bool", "maybe", func(l *config.Loader) any { return l.Bool("DATAPORT_X", true, "") }, true, `DATAPORT_X="maybe": not a boolean`},
		{"duration no unit", "30", func(l *config.Loader) any { return l.Duration("DATAPORT_X", time.Second, "") }, time.Second, `DATAPORT_X="30": not a duration`},
		{"duration garbage", "soon", func(l *config.Loader) any { return l.Duration("DATAPORT_X", time.Second, "") }, time.Second, `DATAPORT_X="soon": not a duration`},
		{"duration zero", "0s", func(l *config.Loader) any { return l.Duration("DATAPORT_X", time.Second, "") }, time.Second, `DATAPORT_X="0s": must be greater than zero`},
		{"duration negative", "-5s", func(l *config.Loader) any { return l.Duration("DATAPORT_X", time.Second, "") }, time.Second, `DATAPORT_X="-5s": must be greater than zero`},
		{"enum", "verbose", func(l *config.Loader) any { return l.Enum("DATAPORT_X", "a", []string{"a", "b"}, "") }, "a", `DATAPORT_X="verbose": must be one of a|b`},
		{"enum case", "A", func(l *config.Loader) any { return l.Enum("DATAPORT_X", "a", []string{"a", "b"}, "") }, "a", `DATAPORT_X="A": must be one of a|b`},
		{"hostport no port", "minio", func(l *config.Loader) any { return l.HostPort("DATAPORT_X", "h:1", "") }, "h:1", `DATAPORT_X="minio": not host:port`},
		{"hostport bad port", "minio:http", func(l *config.Loader) any { return l.HostPort("DATAPORT_X", "h:1", "") }, "h:1", `DATAPORT_X="minio:http": port must be a number`},
		{"hostport port too big", "minio:65536", func(l *config.Loader) any { return l.HostPort("DATAPORT_X", "h:1", "") }, "h:1", `DATAPORT_X="minio:65536": port must be a number`},
		{"hostport empty port", "minio:", func(l *config.Loader) any { return l.HostPort("DATAPORT_X", "h:1", "") }, "h:1", `DATAPORT_X="minio:": port must be a number`},
		{"hostport negative port", "minio:-1", func(l *config.Loader) any { return l.HostPort("DATAPORT_X", "h:1", "") }, "h:1", `DATAPORT_X="minio:-1": port must be a number`},
		{"url relative", "/path", func(l *config.Loader) any { return l.URL("DATAPORT_X", "", "") }, "", `DATAPORT_X="/path": not an absolute URL`},
		{"url no host", "nats://", func(l *config.Loader) any { return l.URL("DATAPORT_X", "", "") }, "", `DATAPORT_X="nats://": not an absolute URL`},
		{"url host only", "127.0.0.1:4222", func(l *config.Loader) any { return l.URL("DATAPORT_X", "", "") }, "", `DATAPORT_X="127.0.0.1:4222": not`},
		{"url unparsable", "http://[::1", func(l *config.Loader) any { return l.URL("DATAPORT_X", "", "") }, "", `DATAPORT_X="http://[::1": not a URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := config.New(env(map[string]string{"DATAPORT_X": tt.value}))
			got := tt.load(l)
			err := l.Err()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.Equal(t, tt.def, got, "an invalid value falls back to the default")
		})
	}
}

func TestLoaderReportsEveryError(t *testing.T) {
	t.Parallel()
	l := config.New(env(map[string]string{
		"DATAPORT_NATS_URL":         "not a url",
		"DATAPORT_S3_ENDPOINT":      "minio",
		"DATAPORT_S3_USE_TLS":       "perhaps",
		"DATAPORT_STREAM_REPLICAS":  "7",
		"DATAPORT_LOG_LEVEL":        "trace",
		"DATAPORT_SHUTDOWN_TIMEOUT": "forever",
	}))
	config.LoadCommon(l)
	l.Required("DATAPORT_TOKEN", "API token")

	err := l.Err()
	require.Error(t, err)
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(err, &joined), "Err joins the individual errors")
	assert.Len(t, joined.Unwrap(), 7)
	for _, name := range []string{
		"DATAPORT_NATS_URL", "DATAPORT_S3_ENDPOINT", "DATAPORT_S3_USE_TLS", "DATAPORT_STREAM_REPLICAS",
		"DATAPORT_LOG_LEVEL", "DATAPORT_SHUTDOWN_TIMEOUT", "DATAPORT_TOKEN",
	} {
		assert.Contains(t, err.Error(), name)
	}
}

func TestLoaderNilGetenv(t *testing.T) {
	t.Parallel()
	l := config.New(nil)
	assert.Equal(t, "d", l.String("V", "d", ""))
	assert.NoError(t, l.Err())
}

func TestPrint(t *testing.T) {
	t.Parallel()
	// defaults is what Print shows of the test's variables with nothing set:
	// one line a variable, sorted by name, secrets masked.
	defaults := []string{
		"DATAPORT_ASSET_BUCKET=dataport-assets",
		"DATAPORT_ENV=production",
		"DATAPORT_EXPORT_BUCKET=dataport-exports",
		"DATAPORT_LOG_LEVEL=info",
		"DATAPORT_NATS_URL=nats://127.0.0.1:4222",
		"DATAPORT_S3_ACCESS_KEY=minioadmin",
		"DATAPORT_S3_ENDPOINT=127.0.0.1:9000",
		"DATAPORT_S3_REGION=us-east-1",
		"DATAPORT_S3_SECRET_KEY=****",
		"DATAPORT_S3_USE_TLS=false",
		"DATAPORT_SHUTDOWN_TIMEOUT=25s",
		"DATAPORT_STREAM_REPLICAS=1",
		"DATAPORT_TOKEN=",
		"DATAPORT_TOKEN_SECRET=",
	}
	// printed is the output of defaults with each of lines in place of the
	// default line of its variable.
	printed := func(lines ...string) string {
		out := slices.Clone(defaults)
		for _, line := range lines {
			name, _, _ := strings.Cut(line, "=")
			i := slices.IndexFunc(out, func(d string) bool { return strings.HasPrefix(d, name+"=") })
			require.NotEqual(t, -1, i, "%s is one of the test's variables", name)
			out[i] = line
		}
		return strings.Join(out, "\n") + "\n"
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{
			name: "defaults with secret masked",
			env:  nil,
			want: printed(),
		},
		{
			name: "effective values with secrets masked",
			env: map[string]string{
				"DATAPORT_S3_SECRET_KEY":   "hunter2",
				"DATAPORT_TOKEN_SECRET":    "tok",
				"DATAPORT_STREAM_REPLICAS": "3",
				"DATAPORT_TOKEN":           "plain",
			},
			want: printed("DATAPORT_STREAM_REPLICAS=3", "DATAPORT_TOKEN=plain", "DATAPORT_TOKEN_SECRET=****"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := config.New(env(tt.env))
			config.LoadCommon(l)
			l.String("DATAPORT_TOKEN", "", "plain token")
			l.Secret("DATAPORT_TOKEN_SECRET", "", "secret token")

			var buf bytes.Buffer
			l.Print(&buf)
			assert.Equal(t, tt.want, buf.String())
			assert.NotContains(t, buf.String(), "hunter2")
		})
	}
}

func TestVars(t *testing.T) {
	t.Parallel()
	l := config.New(env(map[string]string{"DATAPORT_S3_SECRET_KEY": "hunter2"}))
	config.LoadCommon(l)

	vars := l.Vars()
	require.Len(t, vars, 12)
	byName := make(map[string]config.Var, len(vars))
	for i, v := range vars {
		assert.NotEmpty(t, v.Doc, "%s has a doc", v.Name)
		if i > 0 {
			assert.Less(t, vars[i-1].Name, v.Name, "sorted by name")
		}
		byName[v.Name] = v
	}

	assert.Equal(t, config.Var{
		Name: "DATAPORT_S3_SECRET_KEY", Default: "minioadmin", Doc: "MinIO/S3 secret key", Secret: true,
	}, byName["DATAPORT_S3_SECRET_KEY"])
	assert.Equal(t, "1", byName["DATAPORT_STREAM_REPLICAS"].Default)
	assert.Equal(t, "25s", byName["DATAPORT_SHUTDOWN_TIMEOUT"].Default)
	assert.Equal(t, "false", byName["DATAPORT_S3_USE_TLS"].Default)
	assert.Contains(t, byName["DATAPORT_LOG_LEVEL"].Doc, "debug|info|warn|error")
	assert.False(t, byName["DATAPORT_NATS_URL"].Secret)
}

func TestVarsRecordsOnce(t *testing.T) {
	t.Parallel()
	l := config.New(env(nil))
	l.String("A", "1", "first")
	l.String("A", "2", "second")
	assert.Equal(t, []config.Var{{Name: "A", Default: "2", Doc: "second"}}, l.Vars())
}

// FuzzLoader feeds arbitrary strings to the validating accessors; they must
// never panic, and an accepted value must round-trip.
func FuzzLoader(f *testing.F) {
	for _, s := range []string{
		"", "0", "-1", "65535", "65536", "abc", "1.5", "9223372036854775808",
		"1s", "-1s", "0s", "1h2m3.5s", "1e9ns", "true", "YES", "nO",
		"host:80", ":0", "[::1]:9000", "[::1", "a:b:c", "nats://127.0.0.1:4222", "http://[::1", "%zz", "\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l := config.New(func(string) string { return s })
		n := l.Int("I", 3, -100, 100, "")
		d := l.Duration("D", time.Second, "")
		l.Bool("B", false, "")
		hp := l.HostPort("H", "h:1", "")
		u := l.URL("U", "", "")
		l.Enum("E", "a", []string{"a"}, "")
		l.Secret("S", "", "")
		_ = l.Err()
		var buf bytes.Buffer
		l.Print(&buf)
		_ = l.Vars()

		if n < -100 || n > 100 {
			t.Fatalf("Int returned %d outside its range", n)
		}
		if d <= 0 {
			t.Fatalf("Duration returned %v", d)
		}
		if hp != "h:1" && hp != strings.TrimSpace(s) {
			t.Fatalf("HostPort returned %q for %q", hp, s)
		}
		if u != "" && u != strings.TrimSpace(s) {
			t.Fatalf("URL returned %q for %q", u, s)
		}
	})
}
