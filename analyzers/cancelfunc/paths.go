package cancelfunc

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/cfg"

	"github.com/herald-hub/herald/analyzers/internal/astx"
)

// creation checks the cancel funcs returned by the source call.
func (c *checker) creation(call *ast.CallExpr, src *source) {
	switch c.up(call).(type) {
	case *ast.ExprStmt:
		c.report(call, fmt.Sprintf("the %s func of %s is discarded: %s; keep it and defer %s()", src.verb, src.name, src.cost, src.verb))
		return
	case *ast.AssignStmt, *ast.ValueSpec:
		if targets := c.targets(call, src); targets != nil {
			for _, t := range targets {
				c.target(call, src, t)
			}
			return
		}
	}
	if src.slots[0] && c.arity(call) == 1 {
		// A lone cancel func used where it is made: defer s.watch()().
		s := subject{name: "the " + src.verb + " func of " + src.name, src: src}
		if v := c.use(call, c.funcOf(call), map[types.Object]bool{}, s); !v.used && v.why != nil {
			c.report(v.why.node, v.why.msg)
		}
	}
	// Otherwise the results are returned or passed on: the callee owns them.
}

// target checks the cancel func that the source call assigns to t.
func (c *checker) target(call *ast.CallExpr, src *source, t ast.Expr) {
	s := subject{name: "the " + src.verb + " func of " + src.name, src: src}
	switch t := t.(type) {
	case *ast.Ident:
		if t.Name == "_" {
			c.report(call, fmt.Sprintf("the %s func of %s is assigned to _: %s; keep it and defer %s()", src.verb, src.name, src.cost, src.verb))
			return
		}
		if obj := c.objOf(t); obj != nil {
			c.track(call, src, obj)
		}
	case *ast.SelectorExpr, *ast.IndexExpr:
		if v := c.store(t, t, c.funcOf(call), map[types.Object]bool{}, s); !v.used && v.why != nil {
			c.report(v.why.node, v.why.msg)
		}
	}
}

// capturedBefore reports whether a closure written before call, in fn,
// refers to obj: a deferred cleanup that may run at any time.
func (c *checker) capturedBefore(obj types.Object, call *ast.CallExpr, fn ast.Node) bool {
	for _, id := range c.refs[obj] {
		for n := c.parent[id]; n != nil && n != fn; n = c.parent[n] {
			if lit, ok := n.(*ast.FuncLit); ok && lit.Pos() < call.Pos() {
				return true
			}
		}
	}
	return false
}

// deferInLoop reports a defer of obj inside the loop that makes it anew on
// each iteration, when the loop can run without bound (a worker's loop
// over a channel, a for without a condition) and the context made with obj
// is done with at the end of the iteration.
func (c *checker) deferInLoop(call *ast.CallExpr, obj types.Object, fn ast.Node, s subject) {
	var loop ast.Node
	unbounded := false
	for n := c.parent[call]; n != nil && n != fn; n = c.parent[n] {
		switch n.(type) {
		case *ast.ForStmt, *ast.RangeStmt:
			if loop == nil {
				loop = n
			}
			unbounded = unbounded || c.endless(n)
		}
	}
	if loop == nil || !unbounded || c.outlives(call, s.src, loop, fn) {
		return
	}
	g := c.cfgOf(fn)
	for _, id := range c.refs[obj] {
		d := c.deferOf(id, loop)
		if d != nil && g != nil && c.funcOf(d) == fn && c.reenters(g, d, call) {
			c.report(d, fmt.Sprintf("defer %s() in a loop runs only when the function returns, so every iteration's context piles up until then: call %s at the end of each iteration (or move the body into a function)", s.name, s.name))
		}
	}
}

// endless reports whether the loop's number of iterations is not known
// when it starts: a range over a channel or an iterator func, a for
// without a condition, or a for with only a condition. A range over a
// slice, map, string or integer, and a counted for, stop on their own;
// a defer in them holds at most one context per element until the
// function returns, which is not worth a finding.
func (c *checker) endless(loop ast.Node) bool {
	switch l := loop.(type) {
	case *ast.ForStmt:
		return l.Cond == nil || l.Init == nil && l.Post == nil
	case *ast.RangeStmt:
		if t := c.info.TypeOf(l.X); t != nil {
			switch t.Underlying().(type) {
			case *types.Chan, *types.Signature:
				return true
			}
		}
	}
	return false
}

// outlives reports whether a context made by the source call is meant to
// live past the iteration of loop that makes it: it is handed to a
// goroutine, or used outside the loop. Calling its cancel func at the end
// of the iteration would then cut that work short.
func (c *checker) outlives(call *ast.CallExpr, src *source, loop ast.Node, fn ast.Node) bool {
	var lhs []ast.Expr
	switch p := c.up(call).(type) {
	case *ast.AssignStmt:
		lhs = p.Lhs
	case *ast.ValueSpec:
		for _, n := range p.Names {
			lhs = append(lhs, n)
		}
	}
	for i, l := range lhs {
		id, ok := ast.Unparen(l).(*ast.Ident)
		if !ok || src.slots[i] {
			continue
		}
		obj := c.objOf(id)
		if obj == nil {
			continue
		}
		for _, ref := range c.refs[obj] {
			if ref.Pos() < loop.Pos() || ref.Pos() >= loop.End() {
				return true
			}
			for n := c.parent[ref]; n != nil && n != fn; n = c.parent[n] {
				if _, ok := n.(*ast.GoStmt); ok {
					return true
				}
			}
		}
	}
	return false
}

// deferOf returns the defer statement inside loop that calls the use id,
// directly or through a deferred closure.
func (c *checker) deferOf(id *ast.Ident, loop ast.Node) *ast.DeferStmt {
	var n ast.Node = id
	for p := c.parent[n]; p != nil && p != loop; n, p = p, c.parent[p] {
		switch p := p.(type) {
		case *ast.DeferStmt:
			if p.Call.Fun == n || n == p.Call {
				return p
			}
			return nil
		case *ast.CallExpr:
			if p.Fun != n {
				return nil
			}
		case *ast.FuncLit, *ast.ParenExpr, *ast.BlockStmt, *ast.ExprStmt, *ast.IfStmt:
		default:
			if _, ok := p.(ast.Stmt); !ok {
				return nil
			}
		}
	}
	return nil
}

// reenters reports whether control can get from the defer statement d
// back to the statement that makes the cancel func.
func (c *checker) reenters(g *cfg.CFG, d *ast.DeferStmt, call *ast.CallExpr) bool {
	db, di := locate(g, d.Pos())
	cb, ci := locate(g, call.Pos())
	if db == nil || cb == nil {
		return false
	}
	if db == cb && ci > di {
		return true
	}
	seen := map[*cfg.Block]bool{}
	work := append([]*cfg.Block(nil), db.Succs...)
	for len(work) > 0 {
		b := work[len(work)-1]
		work = work[:len(work)-1]
		if seen[b] {
			continue
		}
		seen[b] = true
		if b == cb {
			return true
		}
		work = append(work, b.Succs...)
	}
	return false
}

// paths follows the control flow of fn from the source call that assigns
// obj, and reports the paths on which the cancel func is lost: a return,
// an assignment over it, or the next iteration of a loop.
//
// When the func is handed to other code on some path (a field, a call, a
// goroutine, the caller), deferring it would cut that code short, so the
// fix offered is a call on the path that lacks one.
func (c *checker) paths(call *ast.CallExpr, obj types.Object, fn ast.Node, at []ast.Node, handoff bool, s subject) {
	g := c.cfgOf(fn)
	if g == nil {
		return
	}
	start, si := locate(g, call.Pos())
	if start == nil {
		return
	}
	made := start.Nodes[si]
	handles := func(n ast.Node) bool {
		for _, a := range at {
			if n.Pos() <= a.Pos() && a.Pos() < n.End() {
				return true
			}
		}
		return false
	}
	var ret *ast.ReturnStmt
	var kill ast.Node
	again := false
	seen := map[*cfg.Block]bool{}
	type item struct {
		b    *cfg.Block
		from int
	}
	work := []item{{start, si + 1}}
	for len(work) > 0 {
		it := work[len(work)-1]
		work = work[:len(work)-1]
		stopped := false
		for _, n := range it.b.Nodes[it.from:] {
			if handles(n) {
				stopped = true
			} else if n == made {
				again, stopped = true, true
			} else if c.kills(n, obj) {
				if kill == nil || n.Pos() < kill.Pos() {
					kill = n
				}
				stopped = true
			} else if r, ok := n.(*ast.ReturnStmt); ok {
				if ret == nil || r.Pos() < ret.Pos() {
					ret = r
				}
				stopped = true
			}
			if stopped {
				break
			}
		}
		if stopped {
			continue
		}
		for _, b := range it.b.Succs {
			if !seen[b] {
				seen[b] = true
				work = append(work, item{b, 0})
			}
		}
	}
	if kill != nil {
		c.report(kill, fmt.Sprintf("%s is overwritten before it is called, so the context from %s leaks: call %s() before assigning it again", s.name, s.src.name, s.name))
	}
	if again {
		if handoff {
			c.report(call, fmt.Sprintf("%s is not called before the next iteration replaces it: call %s() on the paths that go on to the next iteration", s.name, s.name))
		} else {
			c.report(call, fmt.Sprintf("%s is not called before the next iteration replaces it: call %s at the end of each iteration", s.name, s.name))
		}
	}
	if ret != nil {
		end := false
		if body := astx.FuncBody(fn); body != nil && ret.Return == body.Rbrace {
			end = true
		}
		switch {
		case end && handoff:
			c.report(call, fmt.Sprintf("%s is not called on the path that reaches the end of the function: call %s() before the function ends on that path", s.name, s.name))
		case end:
			c.report(call, fmt.Sprintf("%s is not called on the path that reaches the end of the function: defer %s() right after %s", s.name, s.name, s.src.name))
		case handoff:
			c.report(ret, fmt.Sprintf("%s is not called on the path through this return: call %s() before this return", s.name, s.name))
		default:
			c.report(ret, fmt.Sprintf("%s is not called on the path through this return: defer %s() right after %s", s.name, s.name, s.src.name))
		}
	}
}

// kills reports whether the CFG node n assigns to obj.
func (c *checker) kills(n ast.Node, obj types.Object) bool {
	var ids []*ast.Ident
	switch n := n.(type) {
	case *ast.AssignStmt:
		for _, l := range n.Lhs {
			if id, ok := ast.Unparen(l).(*ast.Ident); ok {
				ids = append(ids, id)
			}
		}
	case *ast.ValueSpec:
		ids = n.Names
	}
	for _, id := range ids {
		if c.objOf(id) == obj {
			return true
		}
	}
	return false
}

func (c *checker) cfgOf(fn ast.Node) *cfg.CFG {
	switch fn := fn.(type) {
	case *ast.FuncDecl:
		return c.cfgs.FuncDecl(fn)
	case *ast.FuncLit:
		return c.cfgs.FuncLit(fn)
	}
	return nil
}

// locate finds the live block and node of g that contain pos.
func locate(g *cfg.CFG, pos token.Pos) (*cfg.Block, int) {
	for _, b := range g.Blocks {
		if !b.Live {
			continue
		}
		for i, n := range b.Nodes {
			if n.Pos() <= pos && pos < n.End() {
				return b, i
			}
		}
	}
	return nil, 0
}
