module dataport.dev/services/notifier

go 1.26

replace (
	dataport.dev/proto => ../../proto
	dataport.dev/shared => ../../shared
)
