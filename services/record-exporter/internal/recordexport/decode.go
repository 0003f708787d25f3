package recordexport

import (
	"errors"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// record is one sourcev1.Record as an export reads it, decoded straight
// from the wire into flat, reused slices. proto.Unmarshal builds the
// record's google.protobuf.Struct as a map of Value messages with oneof
// wrappers, by reflection: the profile of a record export spent more than
// half its CPU there. decode gives the same values as proto.Unmarshal and
// recordGetter, and fails where proto.Unmarshal fails, so an undecodable
// record is still skipped (decode_test.go compares the two, also as a
// fuzz target).
//
// A record is reused from one message to the next, its slices refilled;
// the values get returns stay valid after the next decode (a sorted
// export keeps them): strings are copied out of the message and nested
// values built afresh, so nothing aliases the message bytes.
type record struct {
	id, org          string
	created, updated timestamp
	keys             []string
	vals             []any
	// valMerge is scratch for a map entry whose value is given more than
	// once.
	valMerge []byte
}

// timestamp is a google.protobuf.Timestamp with its presence.
type timestamp struct {
	set   bool
	sec   int64
	nanos int32
}

func (t timestamp) time() time.Time { return time.Unix(t.sec, int64(t.nanos)).UTC() }

var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// Field numbers of sourcev1.Record, google.protobuf.Struct (its map
// entries) and google.protobuf.Value.
const (
	recID, recResource, recCreated, recUpdated, recFields, recOrg = 1, 2, 3, 4, 5, 6
	entryKey, entryValue                                          = 1, 2
	valNull, valNumber, valString, valBool, valStruct, valList    = 1, 2, 3, 4, 5, 6
)

// decode replaces r with the record encoded in b.
func (r *record) decode(b []byte) error {
	r.id, r.org = "", ""
	r.created, r.updated = timestamp{}, timestamp{}
	clear(r.vals) // drop references to the last record's values
	r.keys, r.vals = r.keys[:0], r.vals[:0]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType || num < recID || num > recOrg {
			// Unknown, or a known number with another wire type, which
			// proto.Unmarshal keeps as unknown too.
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var err error
		switch num {
		case recID:
			r.id, err = str(v)
		case recResource:
			_, err = str(v)
		case recOrg:
			r.org, err = str(v)
		case recCreated:
			err = r.created.merge(v)
		case recUpdated:
			err = r.updated.merge(v)
		case recFields:
			err = r.decodeStruct(v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// get reads a field as recordGetter does.
func (r *record) get(f string) (any, bool) {
	switch f {
	case "id":
		if r.id != "" {
			return r.id, true
		}
	case "createdTime":
		if r.created.set {
			return r.created.time(), true
		}
	case "updatedTime":
		if r.updated.set {
			return r.updated.time(), true
		}
	}
	// A key given twice keeps its last value, as in a decoded map.
	for i := len(r.keys) - 1; i >= 0; i-- {
		if r.keys[i] == f {
			return r.vals[i], true
		}
	}
	return nil, false
}

func str(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", errInvalidUTF8
	}
	return string(b), nil
}

// merge sets the fields present in b: a message field given twice is
// merged, the later occurrence's fields winning.
func (t *timestamp) merge(b []byte) error {
	t.set = true
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if num == 1 {
				t.sec = int64(v)
			} else {
				t.nanos = int32(v)
			}
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// decodeStruct appends the entries of a google.protobuf.Struct.
func (r *record) decodeStruct(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			e, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := r.decodeEntry(e); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// decodeEntry appends one map entry: its last key, and its value, whose
// occurrences are merged as one message.
func (r *record) decodeEntry(b []byte) error {
	var (
		key     string
		val     []byte
		vals    int
		scratch = r.valMerge[:0]
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == entryKey || num == entryValue) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			if num == entryKey {
				var err error
				if key, err = str(v); err != nil {
					return err
				}
				continue
			}
			// Occurrences of a message field merge, which is the same as
			// decoding their bytes one after the other.
			if vals++; vals == 1 {
				val = v
			} else {
				if vals == 2 {
					scratch = append(scratch, val...)
				}
				scratch = append(scratch, v...)
				val = scratch
			}
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	r.valMerge = scratch
	v, err := decodeValue(val)
	if err != nil {
		return err
	}
	r.keys = append(r.keys, key)
	r.vals = append(r.vals, v)
	return nil
}

// decodeValue converts a google.protobuf.Value as structValue does; the
// rare nested struct and list values go through proto.Unmarshal and
// structValue itself.
func decodeValue(b []byte) (any, error) {
	var (
		v      any
		nested bool
	)
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		rest = rest[n:]
		switch {
		case num == valNull && typ == protowire.VarintType:
			if _, n = protowire.ConsumeVarint(rest); n < 0 {
				return nil, protowire.ParseError(n)
			}
			v = nil
		case num == valNumber && typ == protowire.Fixed64Type:
			var x uint64
			if x, n = protowire.ConsumeFixed64(rest); n < 0 {
				return nil, protowire.ParseError(n)
			}
			v = math.Float64frombits(x)
		case num == valString && typ == protowire.BytesType:
			var s []byte
			if s, n = protowire.ConsumeBytes(rest); n < 0 {
				return nil, protowire.ParseError(n)
			}
			str, err := str(s)
			if err != nil {
				return nil, err
			}
			v = str
		case num == valBool && typ == protowire.VarintType:
			var x uint64
			if x, n = protowire.ConsumeVarint(rest); n < 0 {
				return nil, protowire.ParseError(n)
			}
			v = x != 0
		case (num == valStruct || num == valList) && typ == protowire.BytesType:
			if _, n = protowire.ConsumeBytes(rest); n < 0 {
				return nil, protowire.ParseError(n)
			}
			nested = true
		default:
			if n = protowire.ConsumeFieldValue(num, typ, rest); n < 0 {
				return nil, protowire.ParseError(n)
			}
		}
		rest = rest[n:]
	}
	if nested {
		// Which kind wins, and how nested values merge, is
		// proto.Unmarshal's to say.
		var pv structpb.Value
		if err := proto.Unmarshal(b, &pv); err != nil {
			return nil, err
		}
		return structValue(&pv), nil
	}
	return v, nil
}
