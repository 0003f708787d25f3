package deploy_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
)

// credentialVars hold keys and passwords: the manifests must take them from
// the Secret, never from a ConfigMap or a literal, so they are not in
// plain text in the repository, `kubectl describe` or a GitOps diff.
var credentialVars = []string{
	"DATAPORT_S3_ACCESS_KEY", "DATAPORT_S3_SECRET_KEY",
	"DATAPORT_LINK_SECRET", "DATAPORT_LINK_PREVIOUS_SECRETS",
	"DATAPORT_WEBHOOK_SECRET", "DATAPORT_JWT_HS256_SECRET",
	"DATAPORT_TASK_SECRET", "DATAPORT_TASK_PREVIOUS_SECRETS",
	"DATAPORT_SMTP_USERNAME", "DATAPORT_SMTP_PASSWORD",
}

// TestCredentialsComeFromTheSecret checks every service of every overlay:
// each credential the service reads is a secretKeyRef into the overlay's
// Secret and appears in none of the ConfigMaps it loads; only the dev
// overlay runs in development, where the services accept its
// development keys, and prod's Secret holds none of them.
func TestCredentialsComeFromTheSecret(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.name, func(t *testing.T) {
			m := render(t, o.dir)
			for _, s := range services {
				c := &m.deployments[s.name].Spec.Template.Spec.Containers[0]
				reads := codeVars(t, s.dir)
				for _, name := range credentialVars {
					if !slices.Contains(reads, name) {
						continue
					}
					i := slices.IndexFunc(c.Env, func(v corev1.EnvVar) bool { return v.Name == name })
					if assert.GreaterOrEqual(t, i, 0, "%s: %s is not set from the Secret", s.name, name) {
						ref := c.Env[i].ValueFrom
						if assert.True(t, ref != nil && ref.SecretKeyRef != nil, "%s: %s must be a secretKeyRef", s.name, name) {
							assert.True(t, strings.HasPrefix(ref.SecretKeyRef.Name, secretsName), "%s: %s comes from %s", s.name, name, ref.SecretKeyRef.Name)
						}
					}
					for _, src := range c.EnvFrom {
						if src.ConfigMapRef == nil {
							continue
						}
						_, inConfigMap := m.configMaps[src.ConfigMapRef.Name].Data[name]
						assert.False(t, inConfigMap, "%s: %s is in ConfigMap %s", s.name, name, src.ConfigMapRef.Name)
					}
				}
				env := m.env(c).values
				want := "production"
				if o.name == "dev" {
					want = "development"
				}
				assert.Equal(t, want, env["DATAPORT_ENV"], "%s: DATAPORT_ENV", s.name)
				if o.name == "prod" {
					for _, name := range []string{"DATAPORT_LINK_SECRET", "DATAPORT_WEBHOOK_SECRET", "DATAPORT_TASK_SECRET"} {
						assert.NotContains(t, strings.ToLower(env[name]), "dev-only", "%s: prod's %s is a development key", s.name, name)
					}
				}
			}
		})
	}
}
