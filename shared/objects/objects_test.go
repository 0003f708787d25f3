package objects_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/objects"
)

// TestKeys pins the layout as literal strings: objects already stored and
// links already handed out depend on every byte of it.
func TestKeys(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"jobs prefix", objects.JobsPrefix, "jobs/"},
		{"job prefix", objects.JobPrefix("J1"), "jobs/J1/"},
		{"parts prefix", objects.PartsPrefix("J1"), "jobs/J1/parts/"},
		{"part prefix", objects.PartPrefix("J1", 0), "jobs/J1/parts/0/"},
		{"part prefix, large part", objects.PartPrefix("J1", 4294967295), "jobs/J1/parts/4294967295/"},
		{"part key", objects.PartKey("J1", 3, "general.json"), "jobs/J1/parts/3/general.json"},
		{"files prefix", objects.FilesPrefix("J1"), "jobs/J1/files/"},
		{"file key", objects.FileKey("J1", "export.csv"), "jobs/J1/files/export.csv"},
		{"archive name", objects.ArchiveName("J1"), "dataport-J1.zip"},
		{"archive key", objects.ArchiveKey("J1"), "jobs/J1/files/dataport-J1.zip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.got)
		})
	}
}

// TestJobPrefixSeparatesJobs: a job whose id extends another's must not
// fall under the other's prefix, or deleting one job would delete both.
func TestJobPrefixSeparatesJobs(t *testing.T) {
	for _, key := range []string{objects.PartKey("ab", 1, "x.json"), objects.ArchiveKey("ab")} {
		assert.False(t, strings.HasPrefix(key, objects.JobPrefix("a")), key)
		assert.True(t, strings.HasPrefix(key, objects.JobPrefix("ab")), key)
		assert.True(t, strings.HasPrefix(key, objects.JobsPrefix), key)
	}
	assert.False(t, strings.HasPrefix(objects.PartKey("J1", 12, "x"), objects.PartPrefix("J1", 1)))
}

func TestCleanFileName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"general", "general"},
		{"Général chat", "G_n_ral_chat"},
		{"../../etc/passwd", "_.._etc_passwd"},
		{"..", "fallback"},
		{"", "fallback"},
		{"日本", "fallback"},
		{"_-_", "fallback"},
		{".hidden", "hidden"},
		{"a.b-c_d", "a.b-c_d"},
		{"a/b\\c", "a_b_c"},
		{strings.Repeat("x", 300), strings.Repeat("x", 200)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			assert.Equal(t, tt.want, objects.CleanFileName(tt.in, "fallback"))
		})
	}
}

func TestBucket(t *testing.T) {
	tests := []struct {
		name string
		file *exportv1.File
		want string
	}{
		{"empty means the exports bucket", &exportv1.File{ObjectKey: "jobs/J1/parts/1/a.json"}, "exports"},
		{"an asset keeps its bucket", &exportv1.File{ObjectKey: "assets/F1/a.png", Bucket: "assets"}, "assets"},
		{"no file", nil, "exports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, objects.Bucket(tt.file, "exports"))
		})
	}
}

func TestAvatarKey(t *testing.T) {
	key, ok := objects.AvatarKey("alice.example")
	assert.True(t, ok)
	assert.Equal(t, "avatars/alice.example", key)
	for _, bad := range []string{"", "../x", "a/b", ".", ".."} {
		_, ok := objects.AvatarKey(bad)
		assert.False(t, ok, "%q", bad)
	}
}
