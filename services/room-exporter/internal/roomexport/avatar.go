package roomexport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/objects"
)

// AvatarFile is the avatar's name in a data download: Rocket.Chat's
// generateUserAvatarFile copies it to "avatar" in the export folder, with
// no extension, and tools that read its downloads look for that name.
const AvatarFile = "avatar"

// describeAvatar is the user's avatar as a file of the profile part, by
// reference to the object the host platform published in the assets
// bucket (objects.AvatarKey), with its SHA-256 streamed once; nil when
// the user has none. A missing avatar is not an error: Rocket.Chat then
// answers generatedAvatar false and the download has no avatar entry.
func (e *Exporter) describeAvatar(ctx context.Context, username string) (*exportv1.File, error) {
	key, ok := objects.AvatarKey(username)
	if !ok {
		return nil, nil
	}
	r, info, err := e.store.Open(ctx, e.opts.AssetBucket, key)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open avatar %s: %w", key, err)
	}
	defer r.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, r)
	if err != nil {
		return nil, fmt.Errorf("read avatar %s: %w", key, err)
	}
	ct := info.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	return &exportv1.File{
		Bucket:      e.opts.AssetBucket,
		ObjectKey:   key,
		Name:        AvatarFile,
		Size:        uint64(n),
		Records:     1,
		Sha256:      hex.EncodeToString(sum.Sum(nil)),
		ContentType: ct,
	}, nil
}
