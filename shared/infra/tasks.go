package infra

import (
	"strings"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
)

// DevelopmentTaskSecret is the task signing key when DATAPORT_TASK_SECRET
// is not set; fit only for a developer's machine.
const DevelopmentTaskSecret = "dev-only-task-secret-change-me"

// LoadTaskSigner reads DATAPORT_TASK_SECRET, the key with which the
// gateway signs export tasks and exporters verify them. A comma-separated
// list rotates keys: the first signs, every one verifies.
func LoadTaskSigner(l *config.Loader) *bus.TaskSigner {
	raw := l.Secret("DATAPORT_TASK_SECRET", DevelopmentTaskSecret,
		"HMAC key(s) signing export tasks, shared by gateway and room-exporter; comma-separated to rotate (the first signs, all verify)")
	var keys [][]byte
	for k := range strings.SplitSeq(raw, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, []byte(k))
		}
	}
	if len(keys) == 0 {
		keys = [][]byte{[]byte(raw)}
	}
	// Every key is non-empty, which is all NewTaskSigner checks.
	s, _ := bus.NewTaskSigner(keys...)
	return s
}
