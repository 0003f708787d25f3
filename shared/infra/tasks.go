package infra

import (
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
)

// DevelopmentTaskSecret is the task signing key when DATAPORT_TASK_SECRET
// is not set in development; outside development it is refused.
const DevelopmentTaskSecret = "dev-only-task-secret-change-me"

// LoadTaskSigner reads the key with which the gateway signs export tasks
// and exporters verify them (DATAPORT_TASK_SECRET), and the earlier keys
// still accepted during a rotation (DATAPORT_TASK_PREVIOUS_SECRETS). It
// returns nil when the configuration is unusable; l.Err says why.
func LoadTaskSigner(l *config.Loader) *bus.TaskSigner {
	keys := l.SigningKeyRing("DATAPORT_TASK_SECRET", DevelopmentTaskSecret,
		"HMAC key that signs export tasks, shared by gateway and the exporters (32+ random bytes outside development)",
		"DATAPORT_TASK_PREVIOUS_SECRETS", "comma-separated earlier task keys still accepted (not used to sign) during a key rotation")
	s, err := bus.NewTaskSigner(keys...)
	if err != nil {
		return nil // only when current is empty, which SigningSecret reports
	}
	return s
}
