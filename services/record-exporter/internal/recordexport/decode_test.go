package recordexport

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// recordGetter is the reference record.get is checked against: it exposes
// a Record decoded by proto.Unmarshal: id, createdTime and updatedTime from the
// envelope (falling back to fields of the same name), anything else from
// fields.
func recordGetter(r *sourcev1.Record) getter {
	return func(f string) (any, bool) {
		switch f {
		case "id":
			if r.GetId() != "" {
				return r.GetId(), true
			}
		case "createdTime":
			if r.GetCreatedTime() != nil {
				return r.GetCreatedTime().AsTime(), true
			}
		case "updatedTime":
			if r.GetUpdatedTime() != nil {
				return r.GetUpdatedTime().AsTime(), true
			}
		}
		v, ok := r.GetFields().GetFields()[f]
		if !ok {
			return nil, false
		}
		return structValue(v), true
	}
}

// sameDecoding fails t unless record.decode and get agree with
// proto.Unmarshal and recordGetter on data: both fail, or both succeed
// with the same values for every field name the record holds.
func sameDecoding(t *testing.T, data []byte) {
	t.Helper()
	var want sourcev1.Record
	wantErr := proto.Unmarshal(data, &want)
	var got record
	// Decode something else first: a reused record must not leak it.
	require.NoError(t, got.decode(mustMarshal(t, sampleRecord(rand.New(rand.NewPCG(9, 9))))))
	gotErr := got.decode(data)
	if wantErr != nil || gotErr != nil {
		require.Equal(t, wantErr != nil, gotErr != nil, "proto.Unmarshal: %v; decode: %v", wantErr, gotErr)
		return
	}
	require.Equal(t, want.GetId(), got.id)
	require.Equal(t, want.GetOrganizationId(), got.org)
	names := []string{"id", "createdTime", "updatedTime", "missing", ""}
	for k := range want.GetFields().GetFields() {
		names = append(names, k)
	}
	ref := recordGetter(&want)
	for _, f := range names {
		wv, wok := ref(f)
		gv, gok := got.get(f)
		require.Equal(t, wok, gok, "field %q present", f)
		// %#v compares NaN as NaN and nested lists element by element.
		require.Equal(t, fmt.Sprintf("%#v", wv), fmt.Sprintf("%#v", gv), "field %q", f)
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

// sampleRecord is a record with fields of every Value kind.
func sampleRecord(rng *rand.Rand) *sourcev1.Record {
	fields := map[string]*structpb.Value{
		"id":     structpb.NewStringValue(fmt.Sprintf("txn_%d", rng.Uint32())),
		"amount": structpb.NewNumberValue(float64(rng.IntN(100000)) / 100),
		"ok":     structpb.NewBoolValue(rng.IntN(2) == 0),
		"none":   structpb.NewNullValue(),
		"empty":  {},
		"text":   structpb.NewStringValue("Order — \"quoted\", <b>\n"),
	}
	if rng.IntN(2) == 0 {
		l, _ := structpb.NewList([]any{"a", 1.5, true, nil, map[string]any{"x": "y"}})
		fields["list"] = structpb.NewListValue(l)
		s, _ := structpb.NewStruct(map[string]any{"k": "v", "n": 2.0, "deep": map[string]any{"z": []any{1.0}}})
		fields["obj"] = structpb.NewStructValue(s)
	}
	r := &sourcev1.Record{Id: fmt.Sprintf("txn_%d", rng.Uint32()), Resource: "transactions", OrganizationId: "acme",
		Fields: &structpb.Struct{Fields: fields}}
	if rng.IntN(3) > 0 {
		r.CreatedTime = timestamppb.New(time.Unix(rng.Int64N(2e9), rng.Int64N(1e9)))
		r.UpdatedTime = timestamppb.New(time.Unix(rng.Int64N(2e9), 0))
	}
	return r
}

func TestRecordDecodeMatchesProto(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		sameDecoding(t, mustMarshal(t, sampleRecord(rng)))
	}
	tag := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	bytesField := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(tag(b, num, protowire.BytesType), v)
	}
	entry := func(key string, value []byte) []byte {
		e := bytesField(nil, 1, []byte(key))
		return bytesField(e, 2, value)
	}
	str := func(s string) []byte { return bytesField(nil, 3, []byte(s)) }
	num := func(f float64) []byte {
		return protowire.AppendFixed64(tag(nil, 2, protowire.Fixed64Type), math.Float64bits(f))
	}
	listOf := mustMarshal(t, structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("x")}}))
	for name, data := range map[string][]byte{
		"empty":                     {},
		"duplicate key":             bytesField(bytesField(nil, 5, entry("a", str("one"))), 5, entry("a", str("two"))),
		"fields twice":              append(bytesField(nil, 5, entry("a", str("one"))), bytesField(nil, 5, entry("b", num(2)))...),
		"value merged":              bytesField(nil, 5, append(entry("a", str("one")), bytesField(nil, 2, num(3))...)),
		"kind replaced":             bytesField(nil, 5, entry("a", append(str("s"), num(1)...))),
		"list then string":          bytesField(nil, 5, entry("a", append(listOf, str("last")...))),
		"string then list":          bytesField(nil, 5, entry("a", append(str("first"), listOf...))),
		"entry without value":       bytesField(nil, 5, bytesField(nil, 1, []byte("k"))),
		"entry without key":         bytesField(nil, 5, bytesField(nil, 2, str("v"))),
		"NaN":                       bytesField(nil, 5, entry("a", num(math.NaN()))),
		"unknown fields":            protowire.AppendVarint(tag(bytesField(nil, 99, []byte("x")), 100, protowire.VarintType), 7),
		"id as varint":              protowire.AppendVarint(tag(nil, 1, protowire.VarintType), 5),
		"timestamp merged":          bytesField(bytesField(nil, 3, protowire.AppendVarint(tag(nil, 1, protowire.VarintType), 100)), 3, protowire.AppendVarint(tag(nil, 2, protowire.VarintType), 5)),
		"negative nanos":            bytesField(nil, 3, protowire.AppendVarint(tag(nil, 2, protowire.VarintType), protowire.EncodeZigZag(-1))),
		"invalid UTF-8 id":          bytesField(nil, 1, []byte{0xff}),
		"invalid UTF-8 key":         bytesField(nil, 5, entry("\xff", str("v"))),
		"invalid UTF-8 string":      bytesField(nil, 5, entry("k", str("\xfe"))),
		"invalid UTF-8 in resource": bytesField(nil, 2, []byte{0xc3}),
		"truncated":                 bytesField(nil, 5, entry("a", str("one")))[:5],
		"field number zero":         protowire.AppendVarint(nil, 0),
		"end group":                 tag(nil, 7, protowire.EndGroupType),
		"group":                     tag(tag(nil, 7, protowire.StartGroupType), 7, protowire.EndGroupType),
	} {
		t.Run(name, func(t *testing.T) { sameDecoding(t, data) })
	}
}

func FuzzRecordDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		f.Add(mustMarshal(f, sampleRecord(rng)))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) { sameDecoding(t, data) })
}
