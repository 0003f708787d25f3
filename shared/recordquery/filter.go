package recordquery

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Filter is a parsed Rebilly filter: conditions joined with AND. The zero
// Filter matches every record.
//
// Syntax (Rebilly "search filters"):
//
//	status:approved                  field equals value (case-insensitive)
//	status:approved,declined         any of several values (OR)
//	status:approved;currency:USD     several fields (AND)
//	status:!declined                 negation; "!a,b" excludes a and b,
//	                                 "a,!b" keeps a unless it is also b
//	amount:1..10  amount:1..  amount:..10   inclusive ranges (numbers,
//	                                 RFC 3339 / YYYY-MM-DD times, or text)
//	description:*refund*             wildcard * (any run of characters)
//	topic:null  topic:!null          field missing or empty / present
//	description:"a, b; c"            double quotes around values holding
//	                                 , ; or leading !; \" and \\ escape
//	u.username:alice                 sub-fields with "."
//	(appId:1,454|sdkKey:0042)        Dataport's extension: a group of
//	                                 conditions of which at least one holds
//	                                 (myTracker's idApp or SDKKey); inside
//	                                 it, | and ) end unquoted values
//
// Rebilly's predefined value lists ("@name") are not supported and are a
// parse error. Rebilly's syntax has no "(" (a field name cannot hold one),
// so a group never changes what a Rebilly filter means.
type Filter struct {
	Conds []Condition
}

// Condition is one field's part of a filter: the record matches when its
// value equals one of Include (or Include is empty) and none of Exclude.
// A group (Any set, Field empty) matches when any of its conditions does.
type Condition struct {
	Field   string
	Include []Value
	Exclude []Value
	Any     []Condition
}

// ValueKind says how a Value compares.
type ValueKind int

// Value kinds.
const (
	// ValueExact compares for equality (case-insensitive for text).
	ValueExact ValueKind = iota
	// ValueWildcard matches text with * standing for any run of characters.
	ValueWildcard
	// ValueRange matches Lo <= v <= Hi; an empty bound is open.
	ValueRange
	// ValueNull matches a missing, null or empty field.
	ValueNull
)

// Value is one allowed (or excluded) value of a condition.
type Value struct {
	Kind ValueKind
	// Text is the literal for exact and wildcard values.
	Text string
	// Lo and Hi are the bounds of a range; "" is open.
	Lo, Hi string
}

// ParseError says where a filter or sort string is malformed.
type ParseError struct {
	// Param is "filter" or "sort".
	Param string
	// Pos is the byte offset in the input.
	Pos   int
	Field string
	Msg   string
}

func (e *ParseError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: field %q at position %d: %s", e.Param, e.Field, e.Pos, e.Msg)
	}
	return fmt.Sprintf("%s: position %d: %s", e.Param, e.Pos, e.Msg)
}

// IsZero reports whether the filter has no conditions (matches everything).
func (f Filter) IsZero() bool { return len(f.Conds) == 0 }

// Fields lists the fields the filter refers to, in order, for validation
// against a resource with ValidateFields.
func (f Filter) Fields() []string {
	out := make([]string, 0, len(f.Conds))
	for _, c := range f.Conds {
		if c.Any != nil {
			out = append(out, Filter{Conds: c.Any}.Fields()...)
			continue
		}
		out = append(out, c.Field)
	}
	return out
}

// ParseFilter parses Rebilly filter syntax. An empty or blank string is the
// zero Filter. Empty segments between ";" are ignored.
func ParseFilter(s string) (Filter, error) {
	var f Filter
	if !utf8.ValidString(s) {
		return f, &ParseError{Param: "filter", Msg: "not valid UTF-8"}
	}
	p := filterParser{s: s}
	for p.i < len(s) {
		p.skipSpaces()
		if p.i >= len(s) {
			break
		}
		if s[p.i] == ';' {
			p.i++
			continue
		}
		if s[p.i] == '(' {
			c, err := p.group()
			if err != nil {
				return Filter{}, err
			}
			f.Conds = append(f.Conds, c)
			continue
		}
		c, err := p.condition()
		if err != nil {
			return Filter{}, err
		}
		f.Conds = append(f.Conds, c)
	}
	return f, nil
}

type filterParser struct {
	s string
	i int
	// inGroup: | and ) end a condition and an unquoted value.
	inGroup bool
}

// group parses "(cond|cond...)" followed by ";" or the end.
func (p *filterParser) group() (Condition, error) {
	start := p.i
	p.i++ // '('
	p.inGroup = true
	defer func() { p.inGroup = false }()
	var g Condition
	for {
		p.skipSpaces()
		if p.i < len(p.s) && p.s[p.i] == '(' {
			return Condition{}, p.fail("", "groups do not nest")
		}
		c, err := p.condition()
		if err != nil {
			return Condition{}, err
		}
		g.Any = append(g.Any, c)
		if p.i >= len(p.s) || p.s[p.i] == ';' {
			p.i = start
			return Condition{}, p.fail("", "unclosed '('")
		}
		p.i++
		if p.s[p.i-1] == ')' {
			break
		}
	}
	p.skipSpaces()
	if p.i < len(p.s) && p.s[p.i] != ';' {
		return Condition{}, p.fail("", "unexpected %q after ')'", p.s[p.i])
	}
	return g, nil
}

// ends reports whether the byte at p.i ends a condition.
func (p *filterParser) ends() bool {
	return p.i >= len(p.s) || p.s[p.i] == ';' || p.inGroup && (p.s[p.i] == '|' || p.s[p.i] == ')')
}

func (p *filterParser) skipSpaces() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *filterParser) fail(field, format string, args ...any) error {
	return &ParseError{Param: "filter", Pos: p.i, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func validFieldByte(b byte) bool {
	return b == '_' || b == '.' || b == '-' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

func (p *filterParser) condition() (Condition, error) {
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != ':' && !p.ends() {
		p.i++
	}
	field := strings.TrimSpace(p.s[start:p.i])
	if p.i >= len(p.s) || p.s[p.i] != ':' {
		p.i = start
		return Condition{}, p.fail(field, "expected field:value")
	}
	if field == "" {
		p.i = start
		return Condition{}, p.fail("", "missing field name before ':'")
	}
	for k := 0; k < len(field); k++ {
		if !validFieldByte(field[k]) || field[0] == '.' || field[len(field)-1] == '.' {
			p.i = start
			return Condition{}, p.fail(field, "invalid field name (letters, digits, _, - and . only)")
		}
	}
	p.i++ // ':'
	c := Condition{Field: field}
	p.skipSpaces()
	negateAll := false
	if p.i < len(p.s) && p.s[p.i] == '!' {
		negateAll = true
		p.i++
	}
	for {
		p.skipSpaces()
		neg := negateAll
		if p.i < len(p.s) && p.s[p.i] == '!' {
			neg = true
			p.i++
		}
		v, err := p.value(field)
		if err != nil {
			return Condition{}, err
		}
		if neg {
			c.Exclude = append(c.Exclude, v)
		} else {
			c.Include = append(c.Include, v)
		}
		p.skipSpaces()
		if p.ends() {
			return c, nil
		}
		if p.s[p.i] != ',' {
			return Condition{}, p.fail(field, "unexpected %q after value", p.s[p.i])
		}
		p.i++
	}
}

func (p *filterParser) value(field string) (Value, error) {
	if p.i < len(p.s) && p.s[p.i] == '"' {
		text, err := p.quoted(field)
		if err != nil {
			return Value{}, err
		}
		return Value{Kind: ValueExact, Text: text}, nil
	}
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != ',' && !p.ends() {
		if p.s[p.i] == '"' {
			return Value{}, p.fail(field, "quote inside an unquoted value; quote the whole value")
		}
		p.i++
	}
	raw := strings.TrimSpace(p.s[start:p.i])
	switch {
	case raw == "":
		p.i = start
		return Value{}, p.fail(field, "empty value")
	case raw[0] == '@':
		p.i = start
		return Value{}, p.fail(field, "value lists (@name) are not supported")
	case strings.EqualFold(raw, "null"):
		return Value{Kind: ValueNull}, nil
	}
	if lo, hi, ok := strings.Cut(raw, ".."); ok {
		lo, hi = strings.TrimSpace(lo), strings.TrimSpace(hi)
		if lo == "" && hi == "" {
			p.i = start
			return Value{}, p.fail(field, "range needs at least one bound")
		}
		if strings.Contains(hi, "..") {
			p.i = start
			return Value{}, p.fail(field, "range has more than one '..'")
		}
		if err := checkRange(lo, hi); err != nil {
			p.i = start
			return Value{}, p.fail(field, "%v", err)
		}
		return Value{Kind: ValueRange, Lo: lo, Hi: hi}, nil
	}
	if strings.Contains(raw, "*") {
		return Value{Kind: ValueWildcard, Text: raw}, nil
	}
	return Value{Kind: ValueExact, Text: raw}, nil
}

// checkRange rejects ranges whose lower bound is above the upper one when
// both are numbers or both times; a typo there would silently match nothing.
func checkRange(lo, hi string) error {
	if lo == "" || hi == "" {
		return nil
	}
	if a, ok := parseNumber(lo); ok {
		if b, ok := parseNumber(hi); ok && a > b {
			return fmt.Errorf("range %s..%s is empty (lower bound above upper)", lo, hi)
		}
		return nil
	}
	if a, ok := parseTime(lo); ok {
		if b, ok := parseTime(hi); ok && a.After(b) {
			return fmt.Errorf("range %s..%s is empty (lower bound after upper)", lo, hi)
		}
	}
	return nil
}

func (p *filterParser) quoted(field string) (string, error) {
	start := p.i
	p.i++ // opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch c {
		case '\\':
			if p.i+1 >= len(p.s) {
				p.i = start
				return "", p.fail(field, "unterminated quoted value")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case '"':
			p.i++
			return b.String(), nil
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	p.i = start
	return "", p.fail(field, "unterminated quoted value")
}

// Match reports whether the record seen through get satisfies every
// condition. get returns a field's value (string, float64, int, bool,
// time.Time, []string, []any or nil) and whether the record has it.
func (f Filter) Match(get func(field string) (any, bool)) bool {
	for _, c := range f.Conds {
		if !c.holds(get) {
			return false
		}
	}
	return true
}

func (c Condition) holds(get func(field string) (any, bool)) bool {
	if c.Any != nil {
		for _, a := range c.Any {
			if a.holds(get) {
				return true
			}
		}
		return false
	}
	v, ok := get(c.Field)
	if !ok {
		v = nil
	}
	return c.match(v)
}

func (c Condition) match(v any) bool {
	for _, x := range c.Exclude {
		if x.match(v) {
			return false
		}
	}
	if len(c.Include) == 0 {
		return true
	}
	for _, x := range c.Include {
		if x.match(v) {
			return true
		}
	}
	return false
}

func (x Value) match(v any) bool {
	if x.Kind == ValueNull {
		return isNull(v)
	}
	// A list field matches when any element does.
	switch l := v.(type) {
	case []string:
		for _, e := range l {
			if x.match(e) {
				return true
			}
		}
		return false
	case []any:
		for _, e := range l {
			if x.match(e) {
				return true
			}
		}
		return false
	}
	if v == nil {
		return false
	}
	switch x.Kind {
	case ValueExact:
		c, ok := compareValue(v, x.Text)
		return ok && c == 0
	case ValueWildcard:
		return wildcardMatch(strings.ToLower(x.Text), strings.ToLower(FormatValue(v)))
	case ValueRange:
		if x.Lo != "" {
			if c, ok := compareValue(v, x.Lo); !ok || c < 0 {
				return false
			}
		}
		if x.Hi != "" {
			if c, ok := compareValue(v, x.Hi); !ok || c > 0 {
				return false
			}
		}
		return true
	}
	return false
}

func isNull(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []string:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

// wildcardMatch matches s against pattern p where '*' stands for any run of
// bytes; iterative with one backtrack point, so it is linear-ish and cannot
// blow up on hostile patterns.
func wildcardMatch(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
