package ctxguard

// Fires returns how many times the late-goroutine watch's timer went off.
func (g *Guard) Fires() int {
	g.w.mu.Lock()
	defer g.w.mu.Unlock()
	return g.w.fires
}
