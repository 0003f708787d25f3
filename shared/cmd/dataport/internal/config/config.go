// Package config is the CLI's configuration: named contexts, each a
// gateway URL and the credentials to use there, in a JSON file in the
// user's config directory ($XDG_CONFIG_HOME/dataport/config.json), with
// environment variables overriding the chosen context.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// Environment variables that override the file.
const (
	EnvConfig  = "DATAPORT_CONFIG"
	EnvContext = "DATAPORT_CONTEXT"
	EnvURL     = "DATAPORT_URL"
	EnvUser    = "DATAPORT_USER"
	EnvToken   = "DATAPORT_TOKEN"
)

// DefaultURL is the gateway of `make run`.
const DefaultURL = "http://127.0.0.1:8080"

// Context is one gateway and who to be there. The native API
// authenticates with a user id and a personal access token.
type Context struct {
	URL   string `json:"url"`
	User  string `json:"user,omitempty"`
	Token string `json:"token,omitempty"`
}

// File is the configuration file's content.
type File struct {
	Current  string             `json:"current,omitempty"`
	Contexts map[string]Context `json:"contexts,omitempty"`
}

// Path is where the file is: $DATAPORT_CONFIG, else dataport/config.json
// in the user's config directory.
func Path(getenv func(string) string) (string, error) {
	if p := getenv(EnvConfig); p != "" {
		return p, nil
	}
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := getenv("HOME")
		if home == "" {
			d, err := os.UserConfigDir()
			if err != nil {
				return "", fmt.Errorf("no config directory: set %s or XDG_CONFIG_HOME", EnvConfig)
			}
			dir = d
		} else {
			dir = filepath.Join(home, ".config")
		}
	}
	return filepath.Join(dir, "dataport", "config.json"), nil
}

// Load reads the file at path; a missing file is an empty one.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &File{Contexts: map[string]Context{}}, nil
	}
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Contexts == nil {
		f.Contexts = map[string]Context{}
	}
	return &f, nil
}

// Save writes the file, readable only by its owner since it holds tokens.
func (f *File) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Names lists the contexts, sorted.
func (f *File) Names() []string { return slices.Sorted(maps.Keys(f.Contexts)) }

// Resolve returns the context to use: the one named (else
// $DATAPORT_CONTEXT, else the file's current one), with DATAPORT_URL,
// DATAPORT_USER and DATAPORT_TOKEN overriding its fields. Without any
// context or URL it is the local gateway of `make run`. A named context
// that does not exist is an error.
func (f *File) Resolve(name string, getenv func(string) string) (Context, string, error) {
	if name == "" {
		name = getenv(EnvContext)
	}
	if name == "" {
		name = f.Current
	}
	var c Context
	if name != "" {
		var ok bool
		if c, ok = f.Contexts[name]; !ok {
			return Context{}, "", fmt.Errorf("no context %q (dataport context list shows them)", name)
		}
	}
	if v := getenv(EnvURL); v != "" {
		c.URL = v
	}
	if v := getenv(EnvUser); v != "" {
		c.User = v
	}
	if v := getenv(EnvToken); v != "" {
		c.Token = v
	}
	if c.URL == "" {
		c.URL = DefaultURL
	}
	return c, name, nil
}
