package demo_test

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"

	"dataport.dev/shared/demo"
)

// TestExistingDataUnchanged pins the bytes of every part of the data set
// that predates the billing resources: adding resources must not move a
// single draw of the others.
func TestExistingDataUnchanged(t *testing.T) {
	parts := encodeAll(t, demo.Generate())
	got := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(parts)) {
		sum := sha256.Sum256(parts[name])
		got[name] = hex.EncodeToString(sum[:])
	}
	for name, want := range goldenParts {
		assert.Equal(t, want, got[name], "%s changed", name)
	}
}

// goldenParts are the SHA-256 sums of encodeAll's parts as they were
// before customers, subscriptions and invoices joined the data set.
var goldenParts = map[string]string{
	"assets":      "636c4d09db970a6426f988d5eb675da589e26190efb4c447c46054d224194a4f",
	"memberships": "d1bf7691c0cad13c18f72c7bf39d876622a4f901c050d75969d50e3f97d7d440",
	"messages 9XNJBC5uq2IyBUAsMjptsQk3YBJlieKeAR": "90c88986ecd73b8fd30506697c9491404824f349e6eb1ca5da34a70b300bd854",
	"messages announcementsL4zmtlVOx9py3FX30":     "32854a29344d43e42011f005eac70b661397a56828338c6536459083e450213d",
	"messages dev-teamcZXs7NQHJZOkpF1VK":          "5e6d081dfb8e29a2a7e2df3624a8b28b67eb0580295841cb209a3eccb5523cc0",
	"messages generalGENERAL":                     "813e83673ebc582793e8aad4b0b49c3a673138fe0e745ec94c5ba9d5d3fef132",
	"messages lFynfOmPkAWVT0U0cy7zawKyxZjWmpAD6V": "228ec424074d6be3eb033804b9f30a331ed51a5d7cab397bef8786f3edcf95df",
	"messages randommV5etWKxWrQUQs9eu":            "14441acd8ce2983c412cbe5eeae2136faccbfb9a1a7251a0790848ec85c03945",
	"records events":                              "b0684626615b8357f76634835f50be6b47f8a6d796ff8377bf69acb8ea139e5c",
	"records transactions":                        "c8fdab5951782b671dd8c378f6f5101b99daa7a3a8d0ceae5fc37c720a4bc7c8",
	"rooms":                                       "0469a2442021660068d46324a76a5e60819f2a0f041f2c9c9a5397ebcd9e8966",
	"users":                                       "1c1338a4f95225cc722017a478dd920bde6c94ac252cccd315e6df91f225212a",
}
