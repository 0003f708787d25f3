module dataport.dev/services/room-exporter

go 1.26

replace (
	dataport.dev/proto => ../../proto
	dataport.dev/shared => ../../shared
)
