package roomexport

import "dataport.dev/shared/objects"

// fileName is the part's file name: the room's name, or its id for rooms
// without one (direct messages), plus the format's extension.
func fileName(roomName, roomID, ext string) string {
	base := objects.CleanFileName(roomName, "")
	if base == "" {
		base = objects.CleanFileName(roomID, "room")
	}
	return base + ext
}
