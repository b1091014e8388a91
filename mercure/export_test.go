package mercure

// SetStageHook makes h call hold at the named stages of every subscribe
// request ("admitted", "subscribed", "hijacked"), which may block to hold
// the request there.
func SetStageHook(h *Handler, hold func(stage string)) { h.hold = hold }
