package hub

import "fmt"

// Default pattern budgets (Config.MaxPatterns, Config.MaxPatternsPerSubject).
//
// The dispatcher may test every distinct pattern for each update (those it
// cannot rule out by host and literal prefix, and whose answer for the
// topic it has not cached): a few hundred nanoseconds each once the topic
// is parsed. 4096 bounds that at about a millisecond per update in the
// worst case. A subject (and anonymous subscribers together) may hold an
// eighth of it, so that no one client fills the hub's budget alone; a
// thousand subscribers sharing one pattern count it once.
const (
	DefaultMaxPatterns           = 4096
	DefaultMaxPatternsPerSubject = 512
)

// patternLimits are the filled-in budgets; negative means no limit.
type patternLimits struct {
	hub, subject int
}

func limitOf(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return -1
	}
	return v
}

// BudgetError is the error Subscribe returns for a subscription that would
// take the distinct patterns (URL patterns and URI templates) held by its
// subject, or by the whole hub, over budget. The subscription is not
// registered. It is the client's doing, or its peers': answer 429.
type BudgetError struct {
	// Budget is "subject" or "hub".
	Budget string
	// Limit is the budget; Held is how many distinct patterns are held
	// already and Adding how many new ones the subscription brings.
	Limit, Held, Adding int
}

func (e *BudgetError) Error() string {
	who := "this subject's subscriptions"
	if e.Budget == "hub" {
		who = "the hub's subscriptions"
	}
	return fmt.Sprintf("pattern budget exceeded: %s hold %d distinct URL patterns and URI templates, this subscription adds %d, the %s budget is %d",
		who, e.Held, e.Adding, e.Budget, e.Limit)
}

// Matchers returns the hub's table of shared compiled matchers. Compile
// the matchers of subscriptions with it (Matchers.Get), so that a pattern
// many subscribers name is compiled once.
func (h *Hub) Matchers() *Matchers { return h.idx.table }

// Patterns returns the number of distinct patterns (URL patterns and URI
// templates) the hub's subscriptions hold.
func (h *Hub) Patterns() int {
	h.idx.mu.RLock()
	defer h.idx.mu.RUnlock()
	return len(h.idx.patterns)
}
