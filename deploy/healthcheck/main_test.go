package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = w.Write([]byte(`{"status":"ready"}`))
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"unavailable","error":"nats: not connected"}`))
		}
	}))
	t.Cleanup(srv.Close)

	// A port nothing listens on: opened and closed again at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "http://" + ln.Addr().String() + "/readyz"
	require.NoError(t, ln.Close())

	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{name: "ready", args: []string{srv.URL + "/readyz"}, wantOut: `200 OK {"status":"ready"}`},
		{name: "not ready", args: []string{srv.URL + "/broken"}, wantErr: "503 Service Unavailable: {\"status\":\"unavailable\",\"error\":\"nats: not connected\"}"},
		{name: "nothing listening", args: []string{closed}, wantErr: "connection refused"},
		{name: "no URL", args: nil, wantErr: "usage: healthcheck URL"},
		{name: "bad URL", args: []string{"http://[::1"}, wantErr: "healthcheck:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), tt.args, &out)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Contains(t, out.String(), tt.wantOut)
		})
	}
}
