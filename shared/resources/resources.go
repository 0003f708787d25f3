// Package resources is the registry of exportable record resources: data the
// host publishes in a JetStream key-value bucket (bus.BucketResources), one
// entry per resource name holding its recordquery.Resource definition as
// JSON. The gateway validates record exports against it and the record
// exporter reads a resource's definition from it when a task runs, so a
// resource the host registers is exportable in every format without a code
// change.
//
// A resource registered for an organization is visible to that
// organization's exports only; Get answers ErrNotFound to every other one,
// as if it did not exist. Names are unique across organizations, because a
// name is also the subject token of the resource's records.
package resources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/recordquery"
)

// Errors of the registry.
var (
	// ErrNotFound: no resource of that name is visible to the
	// organization.
	ErrNotFound = errors.New("resources: resource not found")
	// ErrOwned: the name is registered for another owner; a registration
	// never takes over another organization's resource.
	ErrOwned = errors.New("resources: name registered for another owner")
	// ErrInvalid wraps a definition that recordquery.Resource.Validate
	// refuses.
	ErrInvalid = errors.New("resources: invalid definition")
)

// Registry reads and writes the resource bucket; safe for concurrent use.
type Registry struct {
	kv jetstream.KeyValue
}

// New returns the registry over kv (the bus.BucketResources bucket).
func New(kv jetstream.KeyValue) *Registry { return &Registry{kv: kv} }

// Open returns the registry of the bucket bus.EnsureTopology declared.
func Open(ctx context.Context, js jetstream.JetStream) (*Registry, error) {
	kv, err := js.KeyValue(ctx, bus.BucketResources)
	if err != nil {
		return nil, fmt.Errorf("resources: bucket %s: %w", bus.BucketResources, err)
	}
	return New(kv), nil
}

// Register stores def, replacing an earlier definition of the same name
// and owner. A name registered for another owner is refused (ErrOwned).
// It is safe to repeat; concurrent registrations of one name are ordered
// by revision, the loser retried.
func (r *Registry) Register(ctx context.Context, def recordquery.Resource) error {
	if err := def.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	data, err := json.Marshal(def)
	if err != nil {
		return fmt.Errorf("resources: encode %s: %w", def.Name, err)
	}
	for attempt := 0; ; attempt++ {
		old, rev, err := r.get(ctx, def.Name)
		switch {
		case errors.Is(err, ErrNotFound):
			_, err = r.kv.Create(ctx, def.Name, data)
		case err != nil:
			return err
		case old.Organization != def.Organization:
			return fmt.Errorf("%w: %s belongs to %s", ErrOwned, def.Name, ownerName(old.Organization))
		case reflect.DeepEqual(old, def):
			return nil
		default:
			_, err = r.kv.Update(ctx, def.Name, data, rev)
		}
		if err == nil {
			return nil
		}
		if attempt >= 3 || !(errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
			return fmt.Errorf("resources: register %s: %w", def.Name, err)
		}
	}
}

func ownerName(org string) string {
	if org == "" {
		return "every organization"
	}
	return "organization " + org
}

// isWrongSequence is a revision-checked update that lost a race.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Get returns the definition of name as org's exports see it: ErrNotFound
// when there is none, or when it belongs to another organization.
func (r *Registry) Get(ctx context.Context, org, name string) (recordquery.Resource, error) {
	if name == "" || strings.ContainsAny(name, ".*> \t\r\n") {
		// Not a key the bucket could hold; asking would be a client error
		// of the KV API, not an unknown resource.
		return recordquery.Resource{}, ErrNotFound
	}
	def, _, err := r.get(ctx, name)
	if err != nil {
		return recordquery.Resource{}, err
	}
	if !def.VisibleTo(org) {
		return recordquery.Resource{}, ErrNotFound
	}
	return def, nil
}

func (r *Registry) get(ctx context.Context, name string) (recordquery.Resource, uint64, error) {
	e, err := r.kv.Get(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted), errors.Is(err, jetstream.ErrInvalidKey):
		return recordquery.Resource{}, 0, ErrNotFound
	case err != nil:
		return recordquery.Resource{}, 0, fmt.Errorf("resources: get %s: %w", name, err)
	}
	var def recordquery.Resource
	if err := json.Unmarshal(e.Value(), &def); err != nil {
		return recordquery.Resource{}, 0, fmt.Errorf("resources: decode %s: %w", name, err)
	}
	def.Name = name
	return def, e.Revision(), nil
}

// List returns the resources visible to org, sorted by name. An entry that
// does not decode is skipped: one bad registration must not hide the rest.
func (r *Registry) List(ctx context.Context, org string) ([]recordquery.Resource, error) {
	lister, err := r.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("resources: list: %w", err)
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("resources: list: %w", ctx.Err())
	}
	slices.Sort(names)
	var out []recordquery.Resource
	for _, n := range names {
		def, err := r.Get(ctx, org, n)
		if err != nil {
			continue
		}
		out = append(out, def)
	}
	return out, nil
}

// Names lists the names of List.
func (r *Registry) Names(ctx context.Context, org string) ([]string, error) {
	defs, err := r.List(ctx, org)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(defs))
	for i, d := range defs {
		out[i] = d.Name
	}
	return out, nil
}

// Delete removes a registration of org (empty: a resource of every
// organization); the resource's records stay where they are.
func (r *Registry) Delete(ctx context.Context, org, name string) error {
	def, rev, err := r.get(ctx, name)
	if err != nil {
		return err
	}
	if def.Organization != org {
		return ErrNotFound
	}
	if err := r.kv.Delete(ctx, name, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("resources: delete %s: %w", name, err)
	}
	return nil
}

// EnsureBuiltins registers the built-in resources (recordquery.Builtins),
// so an installation that predates the registry keeps exporting them: a
// missing one is created, and one still marked built-in is brought to this
// version's definition. A built-in name the host registered itself
// (without the mark) is left as the host wrote it. Every service that
// reads the registry calls it at start; replicas may race on it.
func (r *Registry) EnsureBuiltins(ctx context.Context) error {
	for _, def := range recordquery.Builtins() {
		old, _, err := r.get(ctx, def.Name)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case !old.Builtin || reflect.DeepEqual(old, def):
			continue
		}
		if err := r.Register(ctx, def); err != nil && !errors.Is(err, ErrOwned) {
			return err
		}
	}
	return nil
}
