// Package e2e runs Dataport as a user meets it: every service as its own
// process built from its module, talking to a real NATS JetStream server, the
// real MinIO server and a real SMTP server (Mailpit), driven over HTTP.
package e2e
