package recordquery

import (
	"strings"
	"unicode/utf8"
)

// SortKey is one field of a sort order.
type SortKey struct {
	Field string
	Desc  bool
}

// ParseSort parses a comma-separated list of fields, each optionally
// prefixed with "-" (descending) or "+" (ascending), e.g.
// "-createdTime,name". An empty string is no sort. A field may appear only
// once.
func ParseSort(s string) ([]SortKey, error) {
	if !utf8.ValidString(s) {
		return nil, &ParseError{Param: "sort", Msg: "not valid UTF-8"}
	}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var keys []SortKey
	seen := map[string]bool{}
	pos := 0
	for part := range strings.SplitSeq(s, ",") {
		at := pos
		pos += len(part) + 1
		tok := strings.TrimSpace(part)
		k := SortKey{}
		switch {
		case strings.HasPrefix(tok, "-"):
			k.Desc = true
			tok = tok[1:]
		case strings.HasPrefix(tok, "+"):
			tok = tok[1:]
		}
		if tok == "" {
			return nil, &ParseError{Param: "sort", Pos: at, Msg: "empty sort field"}
		}
		for i := 0; i < len(tok); i++ {
			if !validFieldByte(tok[i]) || tok[0] == '.' || tok[0] == '-' || tok[len(tok)-1] == '.' {
				return nil, &ParseError{Param: "sort", Pos: at, Field: tok, Msg: "invalid field name (letters, digits, _, - and . only)"}
			}
		}
		if seen[tok] {
			return nil, &ParseError{Param: "sort", Pos: at, Field: tok, Msg: "field sorted twice"}
		}
		seen[tok] = true
		k.Field = tok
		keys = append(keys, k)
	}
	return keys, nil
}

// SortFields lists the fields of a sort, for ValidateFields.
func SortFields(keys []SortKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Field
	}
	return out
}

// Compare orders two records by keys: negative when a sorts before b.
// Missing values sort first in ascending order (last in descending).
func Compare(keys []SortKey, a, b func(field string) (any, bool)) int {
	for _, k := range keys {
		va, _ := a(k.Field)
		vb, _ := b(k.Field)
		c := compareAny(va, vb)
		if k.Desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

// Less reports whether record a sorts strictly before record b.
func Less(keys []SortKey, a, b func(field string) (any, bool)) bool {
	return Compare(keys, a, b) < 0
}

// MatchQ is the q parameter: a partial, case-insensitive text search. q is
// split on white space and every term must occur in at least one of fields
// (text form of the value, see FormatValue). A blank q matches everything.
func MatchQ(q string, get func(field string) (any, bool), fields []string) bool {
	terms := strings.Fields(strings.ToLower(q))
	if len(terms) == 0 {
		return true
	}
	texts := make([]string, 0, len(fields))
	for _, f := range fields {
		if v, ok := get(f); ok {
			if s := FormatValue(v); s != "" {
				texts = append(texts, strings.ToLower(s))
			}
		}
	}
	for _, t := range terms {
		found := false
		for _, s := range texts {
			if strings.Contains(s, t) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
