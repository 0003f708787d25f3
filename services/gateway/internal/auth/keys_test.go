package auth_test

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

const hsSecret = "test-hs256-key-0123456789abcdefghij"

var now = time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)

func TestNewKeyAuthenticatorRefusesShortHS256Key(t *testing.T) {
	_, err := auth.NewKeyAuthenticator(nil, nil, auth.KeyConfig{HS256Secret: strings.Repeat("k", auth.MinHS256KeyBytes-1)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "at least 32")
	_, err = auth.NewKeyAuthenticator(nil, nil, auth.KeyConfig{HS256Secret: strings.Repeat("k", auth.MinHS256KeyBytes)})
	assert.NoError(t, err)
}

// TestBearerClaims checks the claims a signed token must also get right:
// a correctly signed token is still refused when it has expired, names
// another issuer or audience, or is valid for longer than the maximum
// lifetime.
func TestBearerClaims(t *testing.T) {
	nats := bustest.Start(t)
	users, err := nats.JS.KeyValue(t.Context(), bus.BucketUsers)
	require.NoError(t, err)
	b, err := proto.Marshal(&sourcev1.User{Id: "alice", Username: "alice"})
	require.NoError(t, err)
	_, err = users.Put(t.Context(), "alice", b)
	require.NoError(t, err)

	a, err := auth.NewKeyAuthenticator(users, nil, auth.KeyConfig{
		HS256Secret: hsSecret,
		Issuer:      "https://login.example.com",
		Audience:    "dataport",
		MaxLifetime: 12 * time.Hour,
		Now:         func() time.Time { return now },
	})
	require.NoError(t, err)

	unix := func(d time.Duration) int64 { return now.Add(d).Unix() }
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "iss": "https://login.example.com", "aud": "dataport", "iat": unix(-time.Hour), "exp": unix(time.Hour)}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	cases := []struct {
		name   string
		claims jwt.MapClaims
		ok     bool
	}{
		{"valid", good(), true},
		{"audience among several", with("aud", []string{"billing", "dataport"}), true},
		{"lifetime exactly the maximum", with("exp", unix(11*time.Hour)), true},
		{"expired", with("exp", unix(-time.Second)), false},
		{"no exp", with("exp", nil), false},
		{"wrong issuer", with("iss", "https://evil.example.com"), false},
		{"no issuer", with("iss", nil), false},
		{"wrong audience", with("aud", "billing"), false},
		{"no audience", with("aud", nil), false},
		{"lifetime beyond the maximum", with("exp", unix(11*time.Hour+time.Second)), false},
		{"issued in the future to stretch its lifetime", jwt.MapClaims{"sub": "alice", "iss": "https://login.example.com", "aud": "dataport", "iat": unix(30 * 24 * time.Hour), "exp": unix(30*24*time.Hour + time.Hour)}, false},
		{"long lifetime counted from nbf without iat", jwt.MapClaims{"sub": "alice", "iss": "https://login.example.com", "aud": "dataport", "nbf": unix(-13 * time.Hour), "exp": unix(time.Hour)}, false},
		{"long lifetime counted from now without iat or nbf", jwt.MapClaims{"sub": "alice", "iss": "https://login.example.com", "aud": "dataport", "exp": unix(13 * time.Hour)}, false},
		{"short lifetime without iat", jwt.MapClaims{"sub": "alice", "iss": "https://login.example.com", "aud": "dataport", "exp": unix(time.Hour)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tc.claims).SignedString([]byte(hsSecret))
			require.NoError(t, err)
			u, err := a.Bearer(t.Context(), tok)
			if tc.ok {
				require.NoError(t, err)
				assert.Equal(t, "alice", u.GetId())
				return
			}
			assert.ErrorIs(t, err, auth.ErrUnauthenticated)
		})
	}
}

func TestBearerDefaultMaxLifetime(t *testing.T) {
	nats := bustest.Start(t)
	users, err := nats.JS.KeyValue(t.Context(), bus.BucketUsers)
	require.NoError(t, err)
	b, err := proto.Marshal(&sourcev1.User{Id: "alice"})
	require.NoError(t, err)
	_, err = users.Put(t.Context(), "alice", b)
	require.NoError(t, err)
	a, err := auth.NewKeyAuthenticator(users, nil, auth.KeyConfig{HS256Secret: hsSecret, Now: func() time.Time { return now }})
	require.NoError(t, err)
	sign := func(exp time.Duration) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(exp).Unix()}).SignedString([]byte(hsSecret))
		require.NoError(t, err)
		return tok
	}
	_, err = a.Bearer(t.Context(), sign(auth.DefaultMaxTokenLifetime))
	assert.NoError(t, err, "a day is accepted by default")
	_, err = a.Bearer(t.Context(), sign(365*24*time.Hour))
	assert.ErrorIs(t, err, auth.ErrUnauthenticated, "a year-long token is refused by default")
}
