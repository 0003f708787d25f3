package pseudonym_test

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"

	"dataport.dev/shared/pseudonym"
)

func TestOfIsStablePerDownloadAndShapedAsRocketChats(t *testing.T) {
	a := pseudonym.Of("job-1", "bob")
	assert.Regexp(t, regexp.MustCompile(`^User_[0-9a-f]{10}$`), a)
	assert.Equal(t, a, pseudonym.Of("job-1", "bob"), "the same person in the same download")
	assert.NotEqual(t, a, pseudonym.Of("job-2", "bob"), "unrelated between downloads")
	assert.NotEqual(t, a, pseudonym.Of("job-1", "carol"))
	// The separator keeps salt and name apart: "job-1"+"x" is not "job-1x"+"".
	assert.NotEqual(t, pseudonym.Of("job-1", "xbob"), pseudonym.Of("job-1x", "bob"))
	// Pinned: files already delivered name people this way.
	assert.Equal(t, "User_0a370aa16d", pseudonym.Of("job-1", "bob"))
}

func TestTableMapsUsernamesToPseudonymsAndSelfToItself(t *testing.T) {
	got := pseudonym.Table("job-1", "alice", "bob", "alice", "", "carol", "bob")
	assert.Equal(t, map[string]string{
		"alice": "alice",
		"bob":   pseudonym.Of("job-1", "bob"),
		"carol": pseudonym.Of("job-1", "carol"),
	}, got)
	assert.Equal(t, map[string]string{}, pseudonym.Table("job-1", ""))
}
