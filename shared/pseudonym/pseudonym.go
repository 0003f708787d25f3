// Package pseudonym derives the names that stand in for other people in a
// personal data download, as Rocket.Chat's hideUsers replaces them with
// User_<n>. The room exporter writes them into the download's room files
// and the gateway lists them in the operation's userNameTable, so both
// must derive them the same way: here.
//
// Rocket.Chat numbers people in the order it meets them while it exports
// the rooms one after the other. Dataport exports each room as its own
// part, in parallel on any exporter, so a shared counter would need
// coordination; a pseudonym is instead a digest of the download and the
// username. The same person is the same pseudonym in every file and
// answer of one download, and unrelated between two downloads.
package pseudonym

import (
	"crypto/sha256"
	"encoding/hex"
)

// Prefix begins every pseudonym, as Rocket.Chat's do.
const Prefix = "User_"

// Of is username's pseudonym in the download salt (its job id): "User_"
// and ten lower-case hex digits.
func Of(salt, username string) string {
	sum := sha256.Sum256([]byte(salt + "\x00" + username))
	return Prefix + hex.EncodeToString(sum[:5])
}

// Table is a download's userNameTable as Rocket.Chat's hideUsers leaves
// it: each username mapped to what the files call that person, the
// download's own user (self) to their own username. Empty usernames are
// left out.
func Table(salt, self string, usernames ...string) map[string]string {
	t := make(map[string]string, len(usernames)+1)
	if self != "" {
		t[self] = self
	}
	for _, u := range usernames {
		if u == "" || u == self {
			continue
		}
		t[u] = Of(salt, u)
	}
	return t
}
