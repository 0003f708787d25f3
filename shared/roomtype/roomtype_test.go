package roomtype_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/roomtype"
)

func TestLetter(t *testing.T) {
	tests := []struct {
		typ  sourcev1.RoomType
		want string
	}{
		{sourcev1.RoomType_ROOM_TYPE_CHANNEL, "c"},
		{sourcev1.RoomType_ROOM_TYPE_PRIVATE, "p"},
		{sourcev1.RoomType_ROOM_TYPE_DIRECT, "d"},
		{sourcev1.RoomType_ROOM_TYPE_UNSPECIFIED, ""},
		{sourcev1.RoomType(99), ""},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			assert.Equal(t, tt.want, roomtype.Letter(tt.typ))
		})
	}
}
