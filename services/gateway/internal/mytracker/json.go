package mytracker

import (
	"encoding/json"
	"io"
)

func writeBody(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
