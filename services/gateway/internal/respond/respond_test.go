package respond_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/services/gateway/internal/respond"
)

func TestArrayWritesWhatMarshalWould(t *testing.T) {
	type view struct {
		Name string `json:"name"`
		N    int    `json:"n,omitempty"`
	}
	for _, tc := range []struct {
		name  string
		items []string
	}{
		{"none", nil},
		{"one", []string{"a"}},
		{"several, with characters JSON escapes", []string{"<b>", `"q"`, "é\n", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			each := func(s string) any { return view{Name: s, N: len(s)} }
			var buf bytes.Buffer
			require.NoError(t, respond.Array(&buf, tc.items, each))
			want := make([]any, 0, len(tc.items))
			for _, s := range tc.items {
				want = append(want, each(s))
			}
			wantJSON, err := json.Marshal(want)
			require.NoError(t, err)
			assert.Equal(t, string(wantJSON), buf.String())
		})
	}
}
