package client

// Unexported functions under test, for the external test package.
var (
	Backoff = backoff
	Unsent  = unsent
)
