package mercure

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Subscribers kept across a restart (Config.PresenceFile). A hub that
// stops ends every stream, and its clients come back within seconds to the
// restarted hub: announcing every end at shutdown and every beginning
// after it would flood the watchers with pairs that mean nothing. So a
// stopping hub keeps the subscribers in their grace period in a file
// instead of announcing their ends, and the restarted hub takes them back
// as in their grace period: those that return keep their identifiers and
// nothing is announced; the ends of the others are announced once the
// period is over.

// keptFormat names the file's format, so that a later one is not misread.
const keptFormat = "herald-subscriptions-1"

type keptFile struct {
	Format string    `json:"format"`
	Saved  time.Time `json:"saved"`
	// Node is the node's name in the cluster, which the next start takes
	// again: its subscriptions' records in the cluster are that name's.
	Node        string       `json:"node,omitempty"`
	Subscribers []keptSubber `json:"subscribers"`
}

type keptSubber struct {
	ParkedKey string    `json:"parked_key,omitempty"`
	ID        string    `json:"id"`
	Key       string    `json:"key"`
	Subject   string    `json:"subject,omitempty"`
	Subs      []keptSub `json:"subs"`
	Left      time.Time `json:"left"`
}

type keptSub struct {
	Form      uint8           `json:"form"`
	MatchType string          `json:"match_type,omitempty"`
	Match     string          `json:"match"`
	Topic     string          `json:"topic"`
	Payload   json.RawMessage `json:"payload,omitempty"`
}

// save writes pcs to path, atomically (a temporary file renamed).
func saveKept(path, node string, pcs []*presenceConn, now time.Time) error {
	f := keptFile{Format: keptFormat, Saved: now, Node: node}
	for _, pc := range pcs {
		k := keptSubber{ID: pc.id, Key: pc.key, Subject: pc.subject, Left: pc.left, ParkedKey: pc.parkedKey}
		for _, a := range pc.subs {
			k.Subs = append(k.Subs, keptSub{Form: uint8(a.form), MatchType: a.matchType, Match: a.match, Topic: a.topic, Payload: a.payload})
		}
		f.Subscribers = append(f.Subscribers, k)
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadKept reads and removes the file at path, and returns the
// subscribers in it and the node's name then; no file is no error.
func loadKept(path string) ([]*presenceConn, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	// Read once: a hub that crashes after this must not take the same
	// subscribers back twice.
	if err := os.Remove(path); err != nil {
		return nil, "", err
	}
	var f keptFile
	if err := json.Unmarshal(b, &f); err != nil || f.Format != keptFormat {
		return nil, "", fmt.Errorf("%s is not a file of kept subscriptions (%v)", filepath.Base(path), err)
	}
	out := make([]*presenceConn, 0, len(f.Subscribers))
	for _, k := range f.Subscribers {
		if k.ID == "" || k.Key == "" || len(k.Subs) == 0 {
			continue
		}
		pc := &presenceConn{id: k.ID, key: k.Key, subject: k.Subject, parkedKey: k.ParkedKey}
		for _, s := range k.Subs {
			pc.subs = append(pc.subs, activeSub{form: subForm(s.Form), matchType: s.MatchType, match: s.Match, topic: s.Topic, payload: s.Payload})
		}
		out = append(out, pc)
	}
	return out, f.Node, nil
}

// keep takes back the subscribers a stopped hub kept, as in their grace
// period from now. p.mu must not be held.
func (p *presence) keep(pcs []*presenceConn) {
	if len(pcs) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, pc := range pcs {
		pc.left = now
		pc.gen++
		e := parkEntry{pc, pc.gen}
		p.conns[pc.id] = pc
		p.parked[pc.key] = append(p.parked[pc.key], e)
		p.leaving = append(p.leaving, e)
		p.nParked++
	}
	if p.timer == nil && p.grace > 0 {
		p.arm(p.grace)
	}
}
