package hub

// routes files pattern groups so that a topic is tested only against the
// groups that can match it. A group is filed in exactly one place:
//
//   - hosts: URL patterns whose protocol and hostname are literal (see
//     urlRoute), by base URL, protocol and hostname, then by the literal
//     start of their pathname. A topic, parsed against the base, looks up
//     its own protocol and hostname, then each start of its pathname
//     that ends in a slash.
//   - raw: selectors whose template begins with literal text ending in a
//     slash, by that text; a topic looks up each of its starts that ends
//     in a slash.
//   - loose: everything else, tested for every topic.
//
// Keys are cut after a slash so that the lookups per topic are few: at
// most one per slash, and no more than a fixed number of slashes deep.
type routes struct {
	hosts map[hostKey]prefixTable
	bases map[string]*baseRef // the bases of the groups in hosts
	raw   prefixTable
	loose map[*patternGroup]struct{}
}

type hostKey struct{ base, proto, host string }

type baseRef struct {
	b *baseURL
	n int
}

// prefixTable files groups by a literal beginning of what they match.
type prefixTable map[string]map[*patternGroup]struct{}

// How deep keys go: a pathname's first eight slashes; a raw topic's
// first ten, which after "https://host/" leaves seven segments.
const (
	pathRouteSlashes = 8
	rawRouteSlashes  = 10
)

func (r *routes) init() {
	r.hosts = make(map[hostKey]prefixTable)
	r.bases = make(map[string]*baseRef)
	r.raw = make(prefixTable)
	r.loose = make(map[*patternGroup]struct{})
}

// routeKey cuts prefix after its last slash among its first n: the
// longest beginning that every lookup of a topic starting with prefix
// tries.
func routeKey(prefix string, n int) string {
	end := 0
	for i := 0; i < len(prefix) && n > 0; i++ {
		if prefix[i] == '/' {
			end, n = i+1, n-1
		}
	}
	return prefix[:end]
}

type place uint8

const (
	placeLoose place = iota
	placeHost
	placeRaw
)

// where says where g is filed: its place and key, and for placeHost the
// host table.
func where(g *patternGroup) (p place, hk hostKey, key string) {
	m := g.m
	switch {
	case m.kind == MatchURLPattern && m.route.host:
		return placeHost, hostKey{m.base.raw, m.route.proto, m.route.hostname}, routeKey(m.route.prefix, pathRouteSlashes)
	case m.kind == MatchSelector:
		if k := routeKey(m.route.prefix, rawRouteSlashes); k != "" {
			return placeRaw, hk, k
		}
	}
	return placeLoose, hk, ""
}

func (r *routes) add(g *patternGroup) {
	p, hk, key := where(g)
	var t prefixTable
	switch p {
	case placeLoose:
		r.loose[g] = struct{}{}
		return
	case placeRaw:
		t = r.raw
	case placeHost:
		if t = r.hosts[hk]; t == nil {
			t = make(prefixTable)
			r.hosts[hk] = t
		}
		ref := r.bases[hk.base]
		if ref == nil {
			ref = &baseRef{b: g.m.base}
			r.bases[hk.base] = ref
		}
		ref.n++
	}
	gs := t[key]
	if gs == nil {
		gs = make(map[*patternGroup]struct{})
		t[key] = gs
	}
	gs[g] = struct{}{}
}

func (r *routes) remove(g *patternGroup) {
	p, hk, key := where(g)
	var t prefixTable
	switch p {
	case placeLoose:
		delete(r.loose, g)
		return
	case placeRaw:
		t = r.raw
	case placeHost:
		t = r.hosts[hk]
		if ref := r.bases[hk.base]; ref != nil {
			if ref.n--; ref.n == 0 {
				delete(r.bases, hk.base)
			}
		}
	}
	if gs := t[key]; gs != nil {
		delete(gs, g)
		if len(gs) == 0 {
			delete(t, key)
		}
	}
	if p == placeHost && len(t) == 0 {
		delete(r.hosts, hk)
	}
}

// collect appends to res the groups filed under each key s may have (the
// empty key, then s up to each of its first n slashes) for which test is
// true.
func (t prefixTable) collect(s string, n int, res []*patternGroup, test func(*patternGroup) bool) []*patternGroup {
	if len(t) == 0 {
		return res
	}
	visit := func(gs map[*patternGroup]struct{}) {
		for g := range gs {
			if test(g) {
				res = append(res, g)
			}
		}
	}
	visit(t[""])
	for i := 0; i < len(s) && n > 0; i++ {
		if s[i] == '/' {
			visit(t[s[:i+1]])
			n--
		}
	}
	return res
}
