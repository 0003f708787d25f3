package demo

import (
	"bytes"
	"crypto/sha256"
	"image"
	"image/color"
	"image/png"

	"dataport.dev/shared/objects"
)

// withoutAvatar names the demo users who have no avatar, so a data
// download without one is part of the demo too.
var withoutAvatar = map[string]bool{"carol": true}

// avatars are the demo users' avatars as the host platform publishes
// them (objects.AvatarKey in the assets bucket). Each is drawn from its
// username alone, not from the data set's generator, so adding them
// moved no other draw.
func avatars(users []DemoUser) []Asset {
	var out []Asset
	for _, u := range users {
		name := u.User.GetUsername()
		key, ok := objects.AvatarKey(name)
		if !ok || withoutAvatar[name] {
			continue
		}
		out = append(out, Asset{ObjectKey: key, ContentType: "image/png", Data: avatarPNG(name)})
	}
	return out
}

// avatarPNG is a 64×64 identicon: a 5×5 grid, mirrored left to right, in
// a colour taken from the username's digest, as generated avatars look.
func avatarPNG(username string) []byte {
	sum := sha256.Sum256([]byte(username))
	fg := color.NRGBA{R: sum[0]/2 + 64, G: sum[1]/2 + 64, B: sum[2]/2 + 64, A: 255}
	bg := color.NRGBA{R: 240, G: 240, B: 240, A: 255}
	const size, cells, margin = 64, 5, 7
	cell := (size - 2*margin) / cells
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	for y := range size {
		for x := range size {
			c := bg
			cx, cy := (x-margin)/cell, (y-margin)/cell
			if x >= margin && y >= margin && cx < cells && cy < cells {
				// Columns 3 and 4 mirror 1 and 0.
				col := min(cx, cells-1-cx)
				if sum[3+cy*3+col]&1 == 1 {
					c = fg
				}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	// Encoding an in-memory image into a buffer cannot fail.
	_ = png.Encode(&buf, img)
	return buf.Bytes()
}
