package native

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/protobuf/reflect/protoreflect"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// TestWords pins every word of the native API's enums (docs/ARCHITECTURE.md,
// "Native API"), walking each enum's descriptor so that no value of the
// proto goes unlisted.
func TestWords(t *testing.T) {
	want := map[protoreflect.FullName]map[protoreflect.EnumNumber]string{
		"dataport.export.v1.JobKind": {0: "unspecified", 1: "room", 2: "user-data", 3: "records", 4: "room-mail"},
		"dataport.export.v1.Format":  {0: "unspecified", 1: "json", 2: "html", 3: "csv", 4: "json-api", 5: "xml", 6: "pdf", 7: "jsonl"},
		"dataport.export.v1.JobState": {0: "unspecified", 1: "pending", 2: "queued", 3: "processing", 4: "finalizing",
			5: "completed", 6: "failed", 7: "rejected", 8: "canceled"},
		"dataport.export.v1.PartKind": {0: "unspecified", 1: "room", 2: "user-profile", 3: "channels", 4: "assets",
			5: "records", 6: "room-mail"},
		"dataport.export.v1.PartState": {0: "unspecified", 1: "pending", 2: "exporting", 3: "completed"},
	}
	for _, e := range []func(protoreflect.EnumNumber) protoreflect.Enum{
		func(n protoreflect.EnumNumber) protoreflect.Enum { return exportv1.JobKind(n) },
		func(n protoreflect.EnumNumber) protoreflect.Enum { return exportv1.Format(n) },
		func(n protoreflect.EnumNumber) protoreflect.Enum { return exportv1.JobState(n) },
		func(n protoreflect.EnumNumber) protoreflect.Enum { return exportv1.PartKind(n) },
		func(n protoreflect.EnumNumber) protoreflect.Enum { return exportv1.PartState(n) },
	} {
		d := e(0).Descriptor()
		words := want[d.FullName()]
		values := d.Values()
		assert.Len(t, words, values.Len(), "every value of %s has its word here", d.FullName())
		for i := range values.Len() {
			n := values.Get(i).Number()
			assert.Equal(t, words[n], word(e(n)), "%s", values.Get(i).Name())
		}
		assert.Equal(t, "unspecified", word(e(999)), "a number this build does not know")
	}
}
