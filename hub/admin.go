package hub

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/herald-hub/herald/sse"
)

// ErrDisconnected ends the streams an administrator disconnected
// (Subscriber.End, Hub.EndSubject).
var ErrDisconnected = errors.New("disconnected by an administrator")

// End ends the subscriber's stream with reason, which Serve returns.
// Safe to call at any time, more than once: the first reason stays.
func (s *Subscriber) End(reason error) { s.end(reason) }

// EndSubject ends, with reason, the stream of every subscriber registered
// with subject (SubscribeOptions.Subject), and returns how many there
// were. An empty subject ends nothing.
func (h *Hub) EndSubject(subject string, reason error) int {
	if subject == "" {
		return 0
	}
	n := 0
	h.subs.each(func(s *Subscriber) {
		if s.subject == subject {
			s.end(reason)
			n++
		}
	})
	return n
}

// TopicCount is one matcher of the index and the subscribers that hold it.
type TopicCount struct {
	Kind        MatchKind
	Match       string
	Subscribers int
}

// Topics returns, sorted by matcher text, at most limit of the matchers
// subscribers hold (exact topics, patterns, the wildcard) whose text sorts
// after after, each with the number of subscribers holding it, and
// whether more follow. It reads the whole index under its read lock,
// which delays dispatch for that long: it is for an administrator's page,
// not for a hot path.
func (h *Hub) Topics(after string, limit int) (out []TopicCount, more bool) {
	x := &h.idx
	x.mu.RLock()
	count := func(sets map[*matcherSet]struct{}) int {
		n := 0
		for st := range sets {
			n += len(st.subs)
		}
		return n
	}
	for t, sets := range x.exact {
		if t > after {
			out = append(out, TopicCount{Kind: MatchExact, Match: t, Subscribers: count(sets)})
		}
	}
	for _, g := range x.patterns {
		if !g.dead && g.m.value > after {
			out = append(out, TopicCount{Kind: g.m.kind, Match: g.m.value, Subscribers: count(g.sets)})
		}
	}
	if len(x.wild) > 0 && "*" > after {
		out = append(out, TopicCount{Kind: MatchExact, Match: "*", Subscribers: count(x.wild)})
	}
	x.mu.RUnlock()
	slices.SortFunc(out, func(a, b TopicCount) int {
		return cmp.Or(cmp.Compare(a.Match, b.Match), cmp.Compare(a.Kind, b.Kind))
	})
	if len(out) > limit {
		return out[:limit], true
	}
	return out, false
}

// recentWindow is how many updates Recent reads from the engine at a time.
const recentWindow = 256

// Recent returns, newest first, at most limit retained updates that carry
// topic (canonical or alternate) and come before the Seq before (0: the
// newest), reading back at most scan updates of the history; next is the
// Seq to pass as before for the page after, 0 when the scan reached the
// oldest retained update. A topic that appears in few of them costs the
// whole scan: the history has no index by topic.
func (h *Hub) Recent(ctx context.Context, topic string, before uint64, limit, scan int) (out []*Update, next uint64, err error) {
	h.idx.mu.RLock()
	epoch, head := h.epoch, h.lastDispatched.Load()
	h.idx.mu.RUnlock()
	// The history may hold more than the dispatcher has handed out: a
	// publish is answered once it is durable, before it is dispatched.
	r, err := h.engine.Read(ctx, Position{Epoch: epoch, Seq: head}, 1)
	if err != nil {
		return nil, 0, err
	}
	head = max(head, r.Head)
	if before == 0 || before > head+1 {
		before = head + 1
	}
	end := before // exclusive
	for scanned := 0; end > 1 && scanned < scan && len(out) < limit; {
		window := uint64(min(recentWindow, scan-scanned))
		from := uint64(0)
		if end-1 > window {
			from = end - 1 - window
		}
		r, err := h.engine.Read(ctx, Position{Epoch: epoch, Seq: from}, int(window))
		if err != nil {
			return nil, 0, err
		}
		var page []*Update
		for _, u := range r.Updates {
			if u.Seq < end {
				page = append(page, u)
			}
		}
		scanned += len(page)
		for i := len(page) - 1; i >= 0 && len(out) < limit; i-- {
			if slices.Contains(page[i].Topics, topic) {
				out = append(out, page[i])
				end = page[i].Seq
			}
		}
		if len(out) >= limit {
			return out, end, nil
		}
		if r.Gap || from == 0 {
			return out, 0, nil // nothing older is retained
		}
		end = from + 1
	}
	if end <= 1 {
		return out, 0, nil
	}
	return out, end, nil
}

// Counts returns how many updates this hub has published (appended
// through Publish) and how many times it handed an update to a
// subscriber's queue, since it started: the two rates an operator watches.
func (h *Hub) Counts() (published, delivered uint64) {
	return h.nPublished.Load(), h.nOffered.Load()
}

// Event decodes the update's frame: its type, data and retry as
// subscribers receive them.
func (u *Update) Event() (sse.Event, error) {
	return sse.NewReader(bytes.NewReader(u.Frame)).Next()
}
