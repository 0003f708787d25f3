package demo

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names WriteFiles creates.
const (
	CredentialsFile = "credentials.json"
	SeedFile        = "seed.json"
)

// Credential is one entry of credentials.json: what a developer or a test
// script needs to call the API as a demo user.
type Credential struct {
	Username  string   `json:"username"`
	Email     string   `json:"email"`
	UserID    string   `json:"userId"`
	AuthToken string   `json:"authToken"`
	APIKey    string   `json:"apiKey"`
	Roles     []string `json:"roles"`
	Name      string   `json:"name"`
}

// Credentials lists the demo users with their clear-text secrets.
func (d *Dataset) Credentials() []Credential {
	out := make([]Credential, 0, len(d.Users))
	for _, u := range d.Users {
		out = append(out, Credential{
			Username:  u.User.GetUsername(),
			Email:     u.User.GetEmail(),
			UserID:    u.User.GetId(),
			AuthToken: u.AuthToken,
			APIKey:    u.APIKey,
			Roles:     u.User.GetRoles(),
			Name:      u.User.GetName(),
		})
	}
	return out
}

// UseSecrets gives every demo user a token and API key of this
// installation: the ones prev (an earlier credentials.json) holds for the
// same user id, else fresh ones from crypto/rand. Generate's own draws
// stay in place so every id is as before, but tokens derived from the
// public seed would let anyone who reads the source call any demo
// installation as its admin.
func (d *Dataset) UseSecrets(prev []Credential) error {
	known := make(map[string]Credential, len(prev))
	for _, c := range prev {
		if c.AuthToken != "" && c.APIKey != "" {
			known[c.UserID] = c
		}
	}
	for i := range d.Users {
		u := &d.Users[i]
		if c, ok := known[u.User.GetId()]; ok {
			u.AuthToken, u.APIKey = c.AuthToken, c.APIKey
		} else {
			var tok, key [32]byte
			if _, err := rand.Read(tok[:]); err != nil {
				return fmt.Errorf("demo credentials: %w", err)
			}
			if _, err := rand.Read(key[:16]); err != nil {
				return fmt.Errorf("demo credentials: %w", err)
			}
			// 43 characters of Rocket.Chat's token alphabet; 32 hex digits.
			u.AuthToken = base64.RawURLEncoding.EncodeToString(tok[:])
			u.APIKey = hex.EncodeToString(key[:16])
		}
		u.User.AuthTokenSha256 = sha256Hex(u.AuthToken)
		u.User.ApiKeySha256 = sha256Hex(u.APIKey)
	}
	return nil
}

// ReadCredentials reads dir/credentials.json as WriteFiles wrote it; nil
// when there is none yet.
func ReadCredentials(dir string) ([]Credential, error) {
	raw, err := os.ReadFile(filepath.Join(dir, CredentialsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	var out []Credential
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, CredentialsFile), err)
	}
	return out, nil
}

// WriteFiles writes dir/credentials.json (the demo users with clear-text
// credentials) and dir/seed.json (Counts), creating dir. Both files hold
// data only the local developer should read, hence 0o700 and 0o600.
func WriteFiles(dir string, d *Dataset) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := writeJSON(filepath.Join(dir, CredentialsFile), d.Credentials()); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, SeedFile), d.Counts())
}

// writeJSON replaces path atomically, so a reader never sees half a file.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	data = append(data, '\n')
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	// CreateTemp already uses 0o600; Chmod states the intent.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
