package auth

import (
	"testing"

	"github.com/stretchr/testify/assert"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// A lookup that read a user before the watch saw a change of it, or
// before the cache restarted, must not cache what it read.
func TestTicketVoidedByAChange(t *testing.T) {
	c := NewCache(nil, nil, CacheOptions{})
	u := &sourcev1.User{Id: "alice"}

	c.start()
	tk := c.ticket()
	c.forgetUser("bob")
	c.put(tk, "t.alice.x", "alice", u)
	assert.Zero(t, c.Len(), "any change voids tickets taken before it")

	tk = c.ticket()
	c.put(tk, "t.alice.x", "alice", u)
	assert.Equal(t, 1, c.Len())

	tk = c.ticket()
	c.stop()
	c.start()
	c.put(tk, "t.alice.y", "alice", u)
	assert.Zero(t, c.Len(), "a restart empties the cache and voids tickets")

	c.stop()
	c.put(c.ticket(), "t.alice.z", "alice", u)
	assert.Zero(t, c.Len(), "a stopped cache keeps nothing")
}
