package config

import "time"

// Common holds the settings every Dataport service needs: NATS, MinIO/S3,
// stream topology, logging and shutdown. Services embed it in their own
// config struct and load it with LoadCommon.
type Common struct {
	// Env is DATAPORT_ENV: EnvProduction (the default) or EnvDevelopment,
	// which relaxes the checks of signing secrets.
	Env string
	// NATSURL is DATAPORT_NATS_URL, the NATS server URL.
	NATSURL string
	// S3Endpoint is DATAPORT_S3_ENDPOINT, the MinIO/S3 host:port.
	S3Endpoint string
	// S3AccessKey is DATAPORT_S3_ACCESS_KEY.
	S3AccessKey string
	// S3SecretKey is DATAPORT_S3_SECRET_KEY; it is masked when printed.
	S3SecretKey string
	// S3Region is DATAPORT_S3_REGION.
	S3Region string
	// S3UseTLS is DATAPORT_S3_USE_TLS: whether to reach S3 over HTTPS.
	S3UseTLS bool
	// ExportBucket is DATAPORT_EXPORT_BUCKET, where finished exports go.
	ExportBucket string
	// AssetBucket is DATAPORT_ASSET_BUCKET, where source assets live.
	AssetBucket string
	// StreamReplicas is DATAPORT_STREAM_REPLICAS, the JetStream replica
	// count for the streams a service declares (1..5).
	StreamReplicas int
	// LogLevel is DATAPORT_LOG_LEVEL: debug, info, warn or error.
	LogLevel string
	// ShutdownTimeout is DATAPORT_SHUTDOWN_TIMEOUT, the budget for a
	// graceful shutdown; keep it below the Kubernetes termination grace
	// period (30s by default).
	ShutdownTimeout time.Duration
}

// Defaults of the Common variables, exported so services and docs can refer
// to them.
const (
	DefaultNATSURL         = "nats://127.0.0.1:4222"
	DefaultS3Endpoint      = "127.0.0.1:9000"
	DefaultS3AccessKey     = "minioadmin"
	DefaultS3SecretKey     = "minioadmin"
	DefaultS3Region        = "us-east-1"
	DefaultExportBucket    = "dataport-exports"
	DefaultAssetBucket     = "dataport-assets"
	DefaultStreamReplicas  = 1
	DefaultLogLevel        = "info"
	DefaultShutdownTimeout = 25 * time.Second
)

// logLevels are the values DATAPORT_LOG_LEVEL accepts.
var logLevels = []string{"debug", "info", "warn", "error"}

// Development reports whether the service runs on a developer's machine.
func (c Common) Development() bool { return c.Env == EnvDevelopment }

// LoadCommon reads the Common variables through l. Errors are collected in
// l; check l.Err after loading the service's own variables too.
func LoadCommon(l *Loader) Common {
	return Common{
		Env:             l.Env(),
		NATSURL:         l.URL("DATAPORT_NATS_URL", DefaultNATSURL, "NATS server URL"),
		S3Endpoint:      l.HostPort("DATAPORT_S3_ENDPOINT", DefaultS3Endpoint, "MinIO/S3 endpoint as host:port"),
		S3AccessKey:     l.String("DATAPORT_S3_ACCESS_KEY", DefaultS3AccessKey, "MinIO/S3 access key"),
		S3SecretKey:     l.Secret("DATAPORT_S3_SECRET_KEY", DefaultS3SecretKey, "MinIO/S3 secret key"),
		S3Region:        l.String("DATAPORT_S3_REGION", DefaultS3Region, "MinIO/S3 region"),
		S3UseTLS:        l.Bool("DATAPORT_S3_USE_TLS", false, "reach MinIO/S3 over HTTPS"),
		ExportBucket:    l.String("DATAPORT_EXPORT_BUCKET", DefaultExportBucket, "bucket for finished exports"),
		AssetBucket:     l.String("DATAPORT_ASSET_BUCKET", DefaultAssetBucket, "bucket for source assets"),
		StreamReplicas:  l.Int("DATAPORT_STREAM_REPLICAS", DefaultStreamReplicas, 1, 5, "JetStream stream replicas (1..5)"),
		LogLevel:        l.Enum("DATAPORT_LOG_LEVEL", DefaultLogLevel, logLevels, "log level"),
		ShutdownTimeout: l.Duration("DATAPORT_SHUTDOWN_TIMEOUT", DefaultShutdownTimeout, "graceful shutdown budget"),
	}
}
