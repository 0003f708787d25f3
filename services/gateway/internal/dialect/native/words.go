package native

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// word is how the native API spells a value of the job model's enums
// (kind, format, state, part kind and part state): the value's proto name
// without the enum's prefix, in lower case, words joined by "-"
// (JOB_KIND_USER_DATA is "user-data", FORMAT_JSON_API "json-api"). Zero
// and numbers this build does not know are "unspecified". Every word the
// API answers with is pinned in words_test.go, so a value added to the
// proto fails a test until the API's documentation takes it in.
func word(v protoreflect.Enum) string {
	values := v.Descriptor().Values()
	val := values.ByNumber(v.Number())
	zero := values.ByNumber(0)
	if v.Number() == 0 || val == nil || zero == nil {
		return "unspecified"
	}
	prefix := strings.TrimSuffix(string(zero.Name()), "UNSPECIFIED")
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(string(val.Name()), prefix)), "_", "-")
}
