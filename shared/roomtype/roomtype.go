// Package roomtype spells source room types the way Rocket.Chat does: the
// one-letter codes "c" (public channel), "p" (private group) and "d"
// (direct messages) of a room's "t" field. The gateway's Rocket.Chat
// dialect shows them in roomList, the exporter writes them into room
// documents and filters record exports by them; all three must agree.
//
// It is a package of its own rather than part of package access (which
// decides who may read a room, not how it is written) or recordquery
// (which knows columns, not the chat model), because both services need
// it and neither of those is about Rocket.Chat's wire format.
package roomtype

import sourcev1 "dataport.dev/proto/gen/dataport/source/v1"

// Letter is Rocket.Chat's letter for t, or "" for ROOM_TYPE_UNSPECIFIED
// and for values this build does not know.
func Letter(t sourcev1.RoomType) string {
	switch t {
	case sourcev1.RoomType_ROOM_TYPE_CHANNEL:
		return "c"
	case sourcev1.RoomType_ROOM_TYPE_PRIVATE:
		return "p"
	case sourcev1.RoomType_ROOM_TYPE_DIRECT:
		return "d"
	}
	return ""
}
