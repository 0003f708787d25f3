package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestPathFollowsXDG(t *testing.T) {
	t.Parallel()
	p, err := Path(env(map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/h"}))
	require.NoError(t, err)
	assert.Equal(t, "/x/dataport/config.json", p)
	p, err = Path(env(map[string]string{"HOME": "/h"}))
	require.NoError(t, err)
	assert.Equal(t, "/h/.config/dataport/config.json", p)
	p, err = Path(env(map[string]string{EnvConfig: "/c.json", "XDG_CONFIG_HOME": "/x"}))
	require.NoError(t, err)
	assert.Equal(t, "/c.json", p)
}

func TestResolveLetsTheEnvironmentOverride(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "config.json")
	f, err := Load(path)
	require.NoError(t, err)
	c, _, err := f.Resolve("", env(nil))
	require.NoError(t, err)
	assert.Equal(t, Context{URL: DefaultURL}, c, "no file: the local gateway")

	f.Contexts["prod"] = Context{URL: "https://prod", User: "u", Token: "t"}
	f.Contexts["dev"] = Context{URL: "http://dev", User: "d", Token: "dt"}
	f.Current = "prod"
	require.NoError(t, f.Save(path))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "tokens are for the owner only")

	f, err = Load(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"dev", "prod"}, f.Names())
	c, name, err := f.Resolve("", env(nil))
	require.NoError(t, err)
	assert.Equal(t, "prod", name)
	assert.Equal(t, "https://prod", c.URL)
	c, name, err = f.Resolve("", env(map[string]string{EnvContext: "dev", EnvToken: "override"}))
	require.NoError(t, err)
	assert.Equal(t, "dev", name)
	assert.Equal(t, Context{URL: "http://dev", User: "d", Token: "override"}, c)
	c, _, err = f.Resolve("dev", env(map[string]string{EnvContext: "prod", EnvURL: "http://elsewhere", EnvUser: "x"}))
	require.NoError(t, err)
	assert.Equal(t, Context{URL: "http://elsewhere", User: "x", Token: "dt"}, c, "the flag's context, the environment's fields")
	_, _, err = f.Resolve("nope", env(nil))
	assert.ErrorContains(t, err, `no context "nope"`)
}
