package resources_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bustest"
	"dataport.dev/shared/recordquery"
	"dataport.dev/shared/resources"
)

func open(t *testing.T) *resources.Registry {
	t.Helper()
	reg, err := resources.Open(t.Context(), bustest.Start(t).JS)
	require.NoError(t, err)
	return reg
}

var widgets = recordquery.Resource{
	Name: "widgets", Organization: "acme",
	Fields:        []recordquery.Field{{Name: "id"}, {Name: "size", Type: recordquery.TypeNumber}, {Name: "createdTime", Type: recordquery.TypeDatetime}},
	DefaultFields: []string{"id", "size"},
}

func TestRegisterGetList(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	reg := open(t)
	names, err := reg.Names(ctx, "acme")
	require.NoError(t, err)
	assert.Empty(t, names, "an empty registry lists nothing")

	require.NoError(t, reg.Register(ctx, widgets))
	require.NoError(t, reg.Register(ctx, widgets), "registering again changes nothing")
	got, err := reg.Get(ctx, "acme", "widgets")
	require.NoError(t, err)
	assert.Equal(t, widgets, got)

	_, err = reg.Get(ctx, "globex", "widgets")
	assert.ErrorIs(t, err, resources.ErrNotFound, "another organization does not see acme's resource")
	_, err = reg.Get(ctx, "", "widgets")
	assert.ErrorIs(t, err, resources.ErrNotFound, "nor does an export outside any organization")
	for _, name := range []string{"gadgets", "", "a.b", "*", "with space"} {
		_, err = reg.Get(ctx, "acme", name)
		assert.ErrorIs(t, err, resources.ErrNotFound, name)
	}

	taken := widgets
	taken.Organization = "globex"
	assert.ErrorIs(t, reg.Register(ctx, taken), resources.ErrOwned, "globex cannot take acme's name")

	changed := widgets
	changed.DefaultFields = []string{"id"}
	require.NoError(t, reg.Register(ctx, changed))
	got, err = reg.Get(ctx, "acme", "widgets")
	require.NoError(t, err)
	assert.Equal(t, []string{"id"}, got.DefaultFields, "the owner updates its definition")

	require.NoError(t, reg.EnsureBuiltins(ctx))
	names, err = reg.Names(ctx, "acme")
	require.NoError(t, err)
	assert.Equal(t, []string{"events", "messages", "rooms", "transactions", "users", "widgets"}, names)
	names, err = reg.Names(ctx, "globex")
	require.NoError(t, err)
	assert.Equal(t, []string{"events", "messages", "rooms", "transactions", "users"}, names)

	require.NoError(t, reg.Delete(ctx, "acme", "widgets"))
	_, err = reg.Get(ctx, "acme", "widgets")
	assert.ErrorIs(t, err, resources.ErrNotFound)
}

func TestRegisterRefusesInvalid(t *testing.T) {
	t.Parallel()
	reg := open(t)
	for name, def := range map[string]recordquery.Resource{
		"bad name":        {Name: "Widgets.x", Fields: []recordquery.Field{{Name: "id"}}},
		"no fields":       {Name: "widgets"},
		"twice":           {Name: "widgets", Fields: []recordquery.Field{{Name: "id"}, {Name: "id"}}},
		"bad default":     {Name: "widgets", Fields: []recordquery.Field{{Name: "id"}}, DefaultFields: []string{"nope"}},
		"bad date field":  {Name: "widgets", Fields: []recordquery.Field{{Name: "id"}}, DateField: "when"},
		"bad type":        {Name: "widgets", Fields: []recordquery.Field{{Name: "id", Type: "money"}}},
		"bad source":      {Name: "widgets", Source: "s3", Fields: []recordquery.Field{{Name: "id"}}},
		"bad owner":       {Name: "widgets", Organization: "a.b", Fields: []recordquery.Field{{Name: "id"}}},
		"alias shadowing": {Name: "widgets", Fields: []recordquery.Field{{Name: "id"}}, Aliases: map[string]string{"id": "id"}},
	} {
		assert.ErrorIs(t, reg.Register(t.Context(), def), resources.ErrInvalid, name)
	}
}

func TestEnsureBuiltins(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	reg := open(t)
	// An older version's built-in definition is brought up to date.
	old, _ := recordquery.Builtin(recordquery.ResourceEvents)
	old.Fields = old.Fields[:9]
	old.TextFields = old.TextFields[:5]
	require.NoError(t, reg.Register(ctx, old))
	// The host's own definition of a built-in name is left alone.
	own, _ := recordquery.Builtin(recordquery.ResourceUsers)
	own.Builtin = false
	own.Fields = own.Fields[:3]
	own.TextFields, own.DateField = nil, ""
	require.NoError(t, reg.Register(ctx, own))

	require.NoError(t, reg.EnsureBuiltins(ctx))
	require.NoError(t, reg.EnsureBuiltins(ctx), "again: nothing to do")
	for _, want := range recordquery.Builtins() {
		got, err := reg.Get(ctx, "acme", want.Name)
		require.NoError(t, err, want.Name)
		if want.Name == recordquery.ResourceUsers {
			assert.Equal(t, own, got)
			continue
		}
		assert.Equal(t, want, got, want.Name)
	}
}
