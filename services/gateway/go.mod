module dataport.dev/services/gateway

go 1.26

replace (
	dataport.dev/proto => ../../proto
	dataport.dev/shared => ../../shared
)
