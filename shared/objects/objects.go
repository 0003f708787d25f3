// Package objects is the layout of the exports bucket: where a job's parts
// and files are stored, how a file name is cleaned before it becomes part
// of a key, and which bucket a recorded File lives in.
//
// Every key of a job sits under jobs/<jobId>/: the exporters write parts
// under jobs/<jobId>/parts/<part>/<name>, the archiver writes the job's
// files under jobs/<jobId>/files/<name>. Keys depend only on the job id,
// the part number and the file name, never on an attempt, so a redelivered
// task overwrites its own earlier upload; and deleting jobs/<jobId>/
// removes everything a job stored. The exporters, the archiver, the
// retention sweeper and the gateway all build keys here, so the layout is
// spelled once. It must stay byte for byte as it is: stored objects and
// the links users hold depend on it.
package objects

import (
	"strconv"
	"strings"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// JobsPrefix begins every key of every job. Multipart uploads under it
// that were never finished belong to an exporter or archiver that died;
// nothing else in the exports bucket starts with it.
const JobsPrefix = "jobs/"

// JobPrefix is the prefix of every object of one job, its parts and its
// files, with a trailing slash so that job "a" never matches job "ab".
func JobPrefix(jobID string) string { return JobsPrefix + jobID + "/" }

// PartsPrefix is the prefix of every part object of a job.
func PartsPrefix(jobID string) string { return JobPrefix(jobID) + "parts/" }

// PartPrefix is the prefix of the objects of one part of a job.
func PartPrefix(jobID string, part uint32) string {
	return PartsPrefix(jobID) + strconv.FormatUint(uint64(part), 10) + "/"
}

// PartKey is where file name of a part is stored. name must already be
// clean (see CleanFileName).
func PartKey(jobID string, part uint32, name string) string {
	return PartPrefix(jobID, part) + name
}

// FilesPrefix is the prefix of a job's packaged files.
func FilesPrefix(jobID string) string { return JobPrefix(jobID) + "files/" }

// FileKey is where the job's packaged file name is stored. name must
// already be clean.
func FileKey(jobID, name string) string { return FilesPrefix(jobID) + name }

// ArchiveName is the file name of a job's zip archive, shown to users and
// used in its download link.
func ArchiveName(jobID string) string { return "dataport-" + jobID + ".zip" }

// ArchiveKey is where a job's zip archive is stored. Packaging a job again
// overwrites the same object instead of adding one.
func ArchiveKey(jobID string) string { return FileKey(jobID, ArchiveName(jobID)) }

// AvatarPrefix begins the keys of users' avatars in the assets bucket.
// The host platform publishes a user's avatar there, under AvatarKey,
// stored with the image's content type, as Rocket.Chat keeps one avatar
// per username; a user without that object has no avatar. A personal
// data download includes it as the entry "avatar".
const AvatarPrefix = "avatars/"

// AvatarKey is where the host platform publishes username's avatar in
// the assets bucket; ok is false for a username no avatar can be stored
// under ("" or one with a "/", which would leave the avatars' folder).
func AvatarKey(username string) (key string, ok bool) {
	if username == "" || strings.ContainsRune(username, '/') || username == "." || username == ".." {
		return "", false
	}
	return AvatarPrefix + username, true
}

// maxFileName bounds a cleaned name so that object keys stay far below
// S3's 1024-byte limit.
const maxFileName = 200

// CleanFileName keeps only [A-Za-z0-9._-] of name, replacing every other
// character with '_', drops leading dots (no hidden files, no "..") and
// returns fallback when nothing meaningful is left. The result is safe as
// an object key segment, a zip entry name and a Content-Disposition file
// name. The gateway plans target files with it and the exporter writes
// them with it, so both must clean the same way.
func CleanFileName(name, fallback string) string {
	var b strings.Builder
	b.Grow(min(len(name), maxFileName))
	for _, r := range name {
		if b.Len() >= maxFileName {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), ".")
	if strings.Trim(s, "_.-") == "" {
		return fallback
	}
	return s
}

// Bucket is the bucket holding f: its own bucket when set (assets of a
// user-data download point into the assets bucket), else exports, the
// exports bucket. Code that deletes must not take a File's bucket on
// trust: an asset's bucket holds the host platform's source files, which
// no export owns.
func Bucket(f *exportv1.File, exports string) string {
	if b := f.GetBucket(); b != "" {
		return b
	}
	return exports
}

// AttachmentListKey is where a part whose attachments are too many for its
// PartUploaded lists them (PartUploaded.attachment_list). No document is
// named so: every document's name ends with its format's extension.
func AttachmentListKey(jobID string, part uint32) string {
	return PartPrefix(jobID, part) + "attachments.list.pb"
}

// AttachmentSegmentPrefix is the prefix of the segments of a part's
// attachment list that its checkpoints name: the attachments collected
// between two checkpoints, so a checkpoint stays small however many the
// part has. The part deletes them once its document is complete, when no
// checkpoint can be resumed any more.
func AttachmentSegmentPrefix(jobID string, part uint32) string {
	return PartPrefix(jobID, part) + "attachments.seg/"
}

// AttachmentSegmentKey is segment n (from 0) of a part's attachment list.
func AttachmentSegmentKey(jobID string, part uint32, n int) string {
	return AttachmentSegmentPrefix(jobID, part) + strconv.Itoa(n) + ".pb"
}
