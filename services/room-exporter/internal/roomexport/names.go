package roomexport

import (
	"strconv"
	"strings"
)

// maxFileName bounds a cleaned name so that object keys stay far below
// S3's 1024-byte limit.
const maxFileName = 200

// CleanFileName keeps only [A-Za-z0-9._-] of name, replacing every other
// character with '_', drops leading dots (no hidden files, no "..") and
// returns fallback when nothing is left. The result is safe as an object
// key segment, a zip entry name and a Content-Disposition file name.
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

// fileName is the part's file name: the room's name, or its id for rooms
// without one (direct messages), plus the format's extension.
func fileName(roomName, roomID, ext string) string {
	base := CleanFileName(roomName, "")
	if base == "" {
		base = CleanFileName(roomID, "room")
	}
	return base + ext
}

// objectKey is where a part is stored. It depends only on the job, the part
// and the room, never on the attempt, so a redelivered task overwrites its
// own earlier upload.
func objectKey(jobID string, part uint32, name string) string {
	return "jobs/" + jobID + "/parts/" + strconv.FormatUint(uint64(part), 10) + "/" + name
}
