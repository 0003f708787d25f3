package egress_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"

	"dataport.dev/shared/egress"
)

func TestCheck(t *testing.T) {
	g := egress.NewGuard([]string{"hooks.internal", "10.1.0.0/16", "192.168.7.7", " "})
	cases := []struct {
		url string
		ok  bool
	}{
		{"https://hooks.example.com/x?token=1", true},
		{"http://93.184.215.14/hook", true},
		{"https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/", true},
		// Names are resolved at dial time, by Control.
		{"https://internal.example.com/", true},
		{"https://hooks.internal/", true},
		{"http://10.1.2.3/", true},
		{"http://192.168.7.7:8080/", true},

		{"ftp://hooks.example.com/", false},
		{"hooks.example.com/x", false},
		{"https:///nohost", false},
		{"https://user:pw@hooks.example.com/", false},
		{"http://127.0.0.1/", false},
		{"http://[::1]/", false},
		{"http://169.254.169.254/latest/meta-data", false},
		{"http://10.2.0.1/", false},
		{"http://192.168.7.8/", false},
		{"http://[::ffff:127.0.0.1]/", false},
		{"http://100.64.0.1/", false},
		{"http://0.0.0.0/", false},
		{"http://localhost:8080/", false},
		{"http://LOCALHOST/", false},
		{"http://api.localhost/", false},
		{"%zz", false},
	}
	for _, tc := range cases {
		_, err := g.Check(tc.url)
		if tc.ok {
			assert.NoError(t, err, tc.url)
		} else {
			assert.ErrorIs(t, err, egress.ErrRefused, tc.url)
		}
	}
}

func TestControl(t *testing.T) {
	g := egress.NewGuard([]string{"127.0.0.2"})
	assert.NoError(t, g.Control("tcp", "93.184.215.14:443", nil))
	assert.NoError(t, g.Control("tcp", "127.0.0.2:80", nil), "allowlisted")
	for _, a := range []string{"127.0.0.1:80", "[fe80::1%eth0]:80", "10.0.0.1:443", "nonsense"} {
		assert.ErrorIs(t, g.Control("tcp", a, nil), egress.ErrRefused, a)
	}
	assert.False(t, g.AllowsHost(""))
	assert.True(t, egress.Forbidden(netip.MustParseAddr("fd00::1")))
	assert.False(t, egress.Forbidden(netip.MustParseAddr("1.1.1.1")))
}

func TestRedactURL(t *testing.T) {
	assert.Equal(t, "https://hooks.example.com/x", egress.RedactURL("https://u:p@hooks.example.com/x?token=s#f"))
	assert.Equal(t, "(unparsable URL)", egress.RedactURL("%zz"))
}
