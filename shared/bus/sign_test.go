package bus_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bus"
)

func TestTaskSignerRotation(t *testing.T) {
	oldKey, newKey := []byte("old-key-0123456789abcdef0123456789"), []byte("new-key-0123456789abcdef0123456789")
	old, err := bus.NewTaskSigner(oldKey)
	require.NoError(t, err)
	rotated, err := bus.NewTaskSigner(newKey, oldKey)
	require.NoError(t, err)
	retired, err := bus.NewTaskSigner(newKey)
	require.NoError(t, err)

	data := []byte("task bytes")
	byOld, byNew := old.Sign(data), rotated.Sign(data)
	assert.NotEqual(t, byOld, byNew, "the first key signs")
	assert.True(t, rotated.Verify(data, byOld), "an old key still verifies during a rotation")
	assert.True(t, rotated.Verify(data, byNew))
	assert.True(t, retired.Verify(data, byNew))
	assert.False(t, retired.Verify(data, byOld), "a dropped key verifies nothing")
	for _, sig := range []string{"", "not base64!", byNew[:10], byNew + "AA"} {
		assert.False(t, rotated.Verify(data, sig), "%q", sig)
	}
	assert.False(t, rotated.Verify([]byte("task bytez"), byNew), "the signature covers the bytes")

	_, err = bus.NewTaskSigner()
	assert.Error(t, err)
	_, err = bus.NewTaskSigner([]byte{})
	assert.Error(t, err)
}
