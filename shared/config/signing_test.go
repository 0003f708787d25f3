package config_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/config"
)

const (
	// strongKey is 64 hex characters, the form `openssl rand -hex 32` prints.
	strongKey   = "3f9c2a7be41d08c65a7f3e92b1d4c8e07a6b5f2c9d1e3a4b8c7d6e5f4a3b2c1d"
	strongKey2  = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	devDefault  = "dev-only-link-secret-change-me"
	linkSecret  = "DATAPORT_LINK_SECRET"
	previousKey = "DATAPORT_LINK_PREVIOUS_SECRETS"
)

func TestEnvDefaultsToProduction(t *testing.T) {
	t.Parallel()
	l := config.New(env(nil))
	assert.Equal(t, config.EnvProduction, l.Env())
	assert.False(t, l.Development())
	require.NoError(t, l.Err())

	l = config.New(env(map[string]string{"DATAPORT_ENV": "staging"}))
	assert.Equal(t, config.EnvProduction, l.Env(), "an unknown value falls back to the strict default")
	l.Env()
	err := l.Err()
	require.Error(t, err)
	assert.Equal(t, 1, strings.Count(err.Error(), "DATAPORT_ENV"), "reading DATAPORT_ENV twice reports it once: %v", err)
}

func TestSigningSecretOutsideDevelopment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value string
		// reason is part of the error; "" means the value is accepted.
		reason string
	}{
		{"unset", "", "not set"},
		{"blank", "   ", "not set"},
		{"the default", devDefault, "well-known development default"},
		{"a placeholder", "please-change-me-0123456789abcdefghijklmnop", `"change-me"`},
		{"placeholder in capitals", "CHANGEME0123456789ABCDEFGHIJKLMNOPQRSTUV", `"changeme"`},
		{"the prod template's REPLACE_ME", "REPLACE_ME", `"replace_me"`},
		{"the word secret", "my-very-long-link-secret-for-production-use", `"secret"`},
		{"an example value", "example0123456789example0123456789example", `"example"`},
		{"dev-only", "dev-only-0123456789abcdefghijklmnopqrstuvwxyz", `"dev-only"`},
		{"31 bytes", strings.Repeat("k", 31), "is 31 bytes long; at least 32 are required"},
		{"32 bytes", strings.Repeat("k", 32), ""},
		{"openssl rand -hex 32", strongKey, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := config.New(env(map[string]string{linkSecret: tt.value}))
			got := l.SigningSecret(linkSecret, devDefault, "HMAC key of signed download links")
			err := l.Err()
			if tt.reason == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.value, got)
				return
			}
			require.Error(t, err)
			msg := err.Error()
			assert.Contains(t, msg, linkSecret, "the error names the variable")
			assert.Contains(t, msg, tt.reason)
			assert.Contains(t, msg, "openssl rand -hex 32", "the error says how to fix it")
			if strings.TrimSpace(tt.value) != "" {
				assert.NotContains(t, msg, tt.value, "the error never repeats the secret")
			}
		})
	}
}

func TestSigningSecretInDevelopment(t *testing.T) {
	t.Parallel()
	for _, value := range []string{"", devDefault, "short"} {
		l := config.New(env(map[string]string{"DATAPORT_ENV": "development", linkSecret: value, previousKey: "old, short"}))
		got := l.SigningSecret(linkSecret, devDefault, "HMAC key of signed download links")
		prev := l.SigningSecrets(previousKey, "previous link keys")
		require.NoError(t, l.Err(), "development accepts %q", value)
		if value == "" {
			assert.Equal(t, devDefault, got, "the default applies in development")
		} else {
			assert.Equal(t, value, got)
		}
		assert.Equal(t, []string{"old", "short"}, prev)
	}
}

func TestSigningSecrets(t *testing.T) {
	t.Parallel()
	l := config.New(env(nil))
	assert.Empty(t, l.SigningSecrets(previousKey, "previous link keys"))
	require.NoError(t, l.Err(), "no previous keys is fine")

	l = config.New(env(map[string]string{previousKey: " " + strongKey + " ,," + strongKey2}))
	assert.Equal(t, []string{strongKey, strongKey2}, l.SigningSecrets(previousKey, "previous link keys"))
	require.NoError(t, l.Err())
	var buf bytes.Buffer
	l.Print(&buf)
	assert.Contains(t, buf.String(), previousKey+"=****\n")
	assert.NotContains(t, buf.String(), strongKey)

	l = config.New(env(map[string]string{previousKey: strongKey + ",too-short"}))
	l.SigningSecrets(previousKey, "previous link keys")
	err := l.Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), previousKey+" key 2 of 2 is 9 bytes long")
	assert.NotContains(t, err.Error(), "too-short")
}

func TestSigningKeyRing(t *testing.T) {
	t.Parallel()
	l := config.New(env(map[string]string{"DATAPORT_LINK_SECRET": strongKey2, previousKey: strongKey}))
	keys := l.SigningKeyRing("DATAPORT_LINK_SECRET", "dev-only-default", "link key", previousKey, "previous link keys")
	require.NoError(t, l.Err())
	assert.Equal(t, [][]byte{[]byte(strongKey2), []byte(strongKey)}, keys, "the signing key first, then the earlier ones")

	l = config.New(env(map[string]string{previousKey: strongKey}))
	l.SigningKeyRing("DATAPORT_LINK_SECRET", "dev-only-default", "link key", previousKey, "previous link keys")
	require.Error(t, l.Err(), "outside development the signing key is still required")
}

func TestPrintMasksURLCredentials(t *testing.T) {
	t.Parallel()
	l := config.New(env(map[string]string{
		"DATAPORT_NATS_URL": "nats://dataport:s3cr3t@nats-0:4222",
		"DATAPORT_TOKEN":    "nats://tok3n@nats-0:4222,nats://u:p@ss@nats-1:4222/x,nats://nats-2:4222",
		"DATAPORT_PLAIN":    "someone@example.com",
	}))
	config.LoadCommon(l)
	l.String("DATAPORT_TOKEN", "", "a list of URLs")
	l.String("DATAPORT_PLAIN", "", "not a URL")
	require.NoError(t, l.Err())
	var buf bytes.Buffer
	l.Print(&buf)
	out := buf.String()
	assert.Contains(t, out, "DATAPORT_NATS_URL=nats://****@nats-0:4222\n")
	assert.Contains(t, out, "DATAPORT_TOKEN=nats://****@nats-0:4222,nats://****@nats-1:4222/x,nats://nats-2:4222\n")
	assert.Contains(t, out, "DATAPORT_PLAIN=someone@example.com\n", "an address outside a URL is left alone")
	for _, leaked := range []string{"s3cr3t", "tok3n", "p@ss"} {
		assert.NotContains(t, out, leaked)
	}
}

func TestBadURLErrorMasksCredentials(t *testing.T) {
	t.Parallel()
	l := config.New(env(map[string]string{"DATAPORT_NATS_URL": "nats://dataport:s3cr3t@"}))
	config.LoadCommon(l)
	err := l.Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DATAPORT_NATS_URL")
	assert.NotContains(t, err.Error(), "s3cr3t")
}
