// Package proto_test checks that the committed generated code matches the
// schemas, so a schema change without `make proto` fails the build.
package proto_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func lookTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "bin", name))
	if err == nil {
		if _, statErr := os.Stat(p); statErr == nil {
			return p
		}
	}
	t.Fatalf("%s not found in PATH or ../bin: run `make tools`", name)
	return ""
}

func TestGeneratedCodeIsFresh(t *testing.T) {
	buf := lookTool(t, "buf")
	plugin := lookTool(t, "protoc-gen-go")
	out := t.TempDir()
	cmd := exec.Command(buf, "generate", "--output", out)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(plugin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf generate: %v\n%s", err, msg)
	}
	want := map[string][]byte{}
	err := filepath.WalkDir(filepath.Join(out, "gen"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, path)
		b, err := os.ReadFile(path)
		want[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		t.Fatal("buf generate produced no files")
	}
	got := map[string]bool{}
	err = filepath.WalkDir("gen", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		got[path] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel, b := range want {
		committed, err := os.ReadFile(rel)
		if err != nil {
			t.Errorf("%s is missing: run `make proto`", rel)
			continue
		}
		if !bytes.Equal(committed, b) {
			t.Errorf("%s is stale: run `make proto`", rel)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s has no schema any more: run `make proto`", rel)
		}
	}
}

func TestSchemasLint(t *testing.T) {
	cmd := exec.Command(lookTool(t, "buf"), "lint")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf lint: %v\n%s", err, msg)
	}
}
