package cancelfunc

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"slices"

	"golang.org/x/tools/go/types/typeutil"
)

// A leak explains why a cancel func is never called.
type leak struct {
	node ast.Node
	msg  string
	rank int // the most telling explanation wins
}

const (
	rankPrinted = iota + 1
	rankBlank
	rankCopied
	rankStored
)

// A verdict says whether a cancel func is taken care of: called, deferred,
// or handed to code that may call it.
type verdict struct {
	used    bool
	escapes bool       // its address is taken: no path can be trusted
	handoff bool       // some path gives it to other code (a field, a call, a goroutine, the caller) instead of calling it
	at      []ast.Node // where, in the function that owns it, it is taken care of (or nil-checked)
	why     *leak      // when not used
}

func (v *verdict) add(w verdict) {
	v.used = v.used || w.used
	v.escapes = v.escapes || w.escapes
	v.handoff = v.handoff || w.handoff
	v.at = append(v.at, w.at...)
	if w.why != nil && (v.why == nil || w.why.rank > v.why.rank) {
		v.why = w.why
	}
}

func usedAt(n ast.Node) verdict { return verdict{used: true, at: []ast.Node{n}} }

// handedAt is usedAt for a use that gives the func to other code, which
// then decides when it is called.
func handedAt(n ast.Node) verdict {
	v := usedAt(n)
	v.handoff = true
	return v
}

// A subject is the cancel func being followed, for the messages.
type subject struct {
	name string // the variable, or "the cancel func of withBudget"
	src  *source
}

// track checks the cancel func held by the local or package variable obj,
// assigned by the source call.
func (c *checker) track(call *ast.CallExpr, src *source, obj types.Object) {
	s := subject{name: obj.Name(), src: src}
	v := c.varVerdict(obj, map[types.Object]bool{}, s)
	if !v.used {
		if v.why != nil {
			c.report(v.why.node, v.why.msg)
		} else {
			c.report(call, fmt.Sprintf("%s is never called: %s; defer %s() right after %s", s.name, src.cost, s.name, src.name))
		}
		return
	}
	fn := c.funcOf(call)
	def := c.defs[obj]
	if v.escapes || fn == nil || def == nil || c.funcOf(def) != fn || c.capturedBefore(obj, call, fn) {
		return // its lifetime is not this function's
	}
	c.deferInLoop(call, obj, fn, s)
	c.paths(call, obj, fn, v.at, v.handoff, s)
}

// varVerdict follows every use of the variable obj.
func (c *checker) varVerdict(obj types.Object, seen map[types.Object]bool, s subject) verdict {
	def := c.defs[obj]
	if seen[obj] || def == nil {
		return verdict{used: true}
	}
	seen[obj] = true
	home := c.funcOf(def)
	var v verdict
	for _, id := range c.refs[obj] {
		if !c.written(id) {
			v.add(c.use(id, home, seen, s))
		}
	}
	// A named result is handed to the caller by a bare return.
	var ft *ast.FuncType
	var body *ast.BlockStmt
	switch h := home.(type) {
	case *ast.FuncDecl:
		ft, body = h.Type, h.Body
	case *ast.FuncLit:
		ft, body = h.Type, h.Body
	}
	if ft != nil && ft.Results != nil && body != nil && ft.Results.Pos() <= def.Pos() && def.End() <= ft.Results.End() {
		c.returns(body, func(ret *ast.ReturnStmt) {
			if len(ret.Results) == 0 {
				v.add(handedAt(ret))
			}
		})
	}
	return v
}

// use classifies the use e of a cancel func whose variable belongs to the
// function home, seeing through the closures between e and home.
func (c *checker) use(e ast.Expr, home ast.Node, seen map[types.Object]bool, s subject) verdict {
	v := c.value(e, home, seen, s)
	for n := c.parent[e]; n != nil && n != home; n = c.parent[n] {
		lit, ok := n.(*ast.FuncLit)
		if !ok {
			continue
		}
		if !v.used {
			// A closure that only compares or prints it says nothing
			// about the paths of home.
			v.at = nil
			return v
		}
		// The closure takes care of it only if the closure runs.
		lv := c.value(lit, home, seen, s)
		lv.escapes = lv.escapes || v.escapes
		lv.handoff = lv.handoff || v.handoff
		v = lv
	}
	return v
}

// value classifies how the expression e, whose value is a cancel func,
// is used by its parent.
func (c *checker) value(e ast.Expr, home ast.Node, seen map[types.Object]bool, s subject) verdict {
	e = c.outer(e)
	switch p := c.parent[e].(type) {
	case *ast.CallExpr:
		if p.Fun == e {
			if _, ok := c.parent[p].(*ast.GoStmt); ok {
				return handedAt(p) // a goroutine owns it
			}
			return usedAt(p)
		}
		if c.printer(p) {
			return verdict{why: &leak{p, fmt.Sprintf("%s is only printed, never called: %s; defer %s() right after %s", s.name, s.src.cost, s.name, s.src.name), rankPrinted}}
		}
		return handedAt(p) // handed to a function that may call it
	case *ast.AssignStmt:
		i := slices.Index(p.Rhs, e)
		if i < 0 {
			return verdict{}
		}
		if len(p.Lhs) != len(p.Rhs) {
			return handedAt(p)
		}
		return c.store(p.Lhs[i], p, home, seen, s)
	case *ast.ValueSpec:
		i := slices.Index(p.Values, e)
		if i < 0 || len(p.Names) != len(p.Values) {
			return handedAt(p)
		}
		return c.store(p.Names[i], p, home, seen, s)
	case *ast.BinaryExpr:
		if p.Op == token.EQL || p.Op == token.NEQ {
			return verdict{at: []ast.Node{p}} // a nil check guards the paths where it is missing
		}
	case *ast.KeyValueExpr:
		if p.Value == e {
			if key, ok := p.Key.(*ast.Ident); ok {
				if f, ok := c.info.Uses[key].(*types.Var); ok && f.IsField() {
					owner := c.info.TypeOf(c.parent[p].(ast.Expr))
					return c.storeField(f, fieldName(owner, key.Name), owner, p, s)
				}
			}
		}
	case *ast.UnaryExpr:
		if p.Op == token.AND {
			v := handedAt(p)
			v.escapes = true
			return v
		}
	}
	return handedAt(c.parent[e]) // returned, sent, appended, converted: handed on
}

// store classifies the assignment of a cancel func to lhs by stmt.
func (c *checker) store(lhs ast.Expr, stmt ast.Node, home ast.Node, seen map[types.Object]bool, s subject) verdict {
	switch l := ast.Unparen(lhs).(type) {
	case *ast.Ident:
		if l.Name == "_" {
			return verdict{why: &leak{stmt, fmt.Sprintf("%s is assigned to _ and never called: %s; defer %s() instead", s.name, s.src.cost, s.name), rankBlank}}
		}
		obj := c.objOf(l)
		if obj == nil {
			return handedAt(stmt)
		}
		av := c.varVerdict(obj, seen, s)
		local := c.defs[obj] != nil && c.funcOf(c.defs[obj]) == home
		if !av.used {
			if av.why == nil || av.why.rank < rankCopied {
				av.why = &leak{stmt, fmt.Sprintf("%s is copied to %s, which is never called: %s; call %s() when the work is done", s.name, l.Name, s.src.cost, l.Name), rankCopied}
			}
			if !local {
				av.at = nil
			}
			return av
		}
		if local {
			return av
		}
		v := handedAt(stmt)
		v.escapes = av.escapes
		return v
	case *ast.SelectorExpr:
		if f, ok := c.info.Uses[l.Sel].(*types.Var); ok && f.IsField() {
			return c.storeField(f, types.ExprString(l), c.info.TypeOf(l.X), stmt, s)
		}
	case *ast.IndexExpr:
		if t := c.info.TypeOf(l.X); t != nil {
			if _, ok := t.Underlying().(*types.Map); ok {
				if root := c.rootOf(l.X); root != nil && !c.mapCalled(root) {
					return verdict{why: &leak{stmt, fmt.Sprintf("the funcs stored in %s are never called: %s; call the entry's func before deleting it, and all of them on shutdown", types.ExprString(l.X), s.src.cost), rankStored}}
				}
			}
		}
	}
	return handedAt(stmt)
}

// storeField classifies the store of a cancel func in the field f (named
// as written) of a value of type owner.
func (c *checker) storeField(f *types.Var, name string, owner types.Type, stmt ast.Node, s subject) verdict {
	if c.fieldCalled(f) {
		return handedAt(stmt)
	}
	return verdict{why: &leak{stmt, fmt.Sprintf("%s is stored but never called: %s", name, closer(owner)), rankStored}}
}

// fieldName names the field of a composite literal of type owner.
func fieldName(owner types.Type, field string) string {
	if p, ok := owner.(*types.Pointer); ok {
		owner = p.Elem()
	}
	if n, ok := types.Unalias(owner).(*types.Named); ok {
		return n.Obj().Name() + "." + field
	}
	return field
}

// closer says where a cancel func stored in a field of a value of type
// owner should be called: in its Close (or Stop, Shutdown, Cancel) method
// when it has one, otherwise in one to add.
func closer(owner types.Type) string {
	if owner == nil {
		return "call it where its owner is done"
	}
	if p, ok := owner.Underlying().(*types.Pointer); ok {
		owner = p.Elem()
	}
	ms := types.NewMethodSet(types.NewPointer(owner))
	for _, name := range []string{"Close", "Stop", "Shutdown", "Cancel"} {
		if sel := ms.Lookup(nil, name); sel != nil && sel.Kind() == types.MethodVal {
			return "call it in " + name
		}
	}
	if n, ok := types.Unalias(owner).(*types.Named); ok {
		return fmt.Sprintf("add a Close method to %s that calls it", n.Obj().Name())
	}
	return "call it where its owner is done"
}

// fieldCalled reports whether some code of the package may call the
// cancel func stored in the field f.
func (c *checker) fieldCalled(f *types.Var) bool {
	f = f.Origin()
	if f.Exported() || f.Pkg() != c.pass.Pkg {
		return true // callers elsewhere may call it
	}
	if called, ok := c.fields[f]; ok {
		return called
	}
	c.fields[f] = true // while looking, assume it is: a cycle proves nothing
	called := false
	for _, id := range c.refs[f] {
		if kv, ok := c.parent[id].(*ast.KeyValueExpr); ok && kv.Key == id {
			continue // a composite literal stores it
		}
		sel, ok := c.parent[id].(*ast.SelectorExpr)
		if !ok || sel.Sel != id {
			called = true
			break
		}
		if c.written(sel) {
			continue
		}
		if v := c.use(sel, nil, map[types.Object]bool{}, subject{src: &source{}}); v.used {
			called = true
			break
		}
	}
	c.fields[f] = called
	return called
}

// mapCalled reports whether the funcs stored in the map held by root may
// be called: whether the map is read in any way but to store, delete,
// count or nil-check entries.
func (c *checker) mapCalled(root types.Object) bool {
	if f, ok := root.(*types.Var); ok && f.IsField() && (f.Exported() || f.Pkg() != c.pass.Pkg) {
		return true
	}
	if c.defs[root] == nil {
		return true
	}
	for _, id := range c.refs[root] {
		var e ast.Expr = id
		if sel, ok := c.parent[id].(*ast.SelectorExpr); ok && sel.Sel == id {
			e = sel
		}
		e = c.outer(e)
		switch p := c.parent[e].(type) {
		case *ast.IndexExpr:
			if p.X == e && c.written(p) {
				continue
			}
		case *ast.CallExpr:
			if id, ok := ast.Unparen(p.Fun).(*ast.Ident); ok && p.Fun != e {
				if b, ok := c.info.Uses[id].(*types.Builtin); ok && (b.Name() == "delete" || b.Name() == "len" || b.Name() == "clear") {
					continue
				}
			}
		case *ast.AssignStmt:
			if slices.Contains(p.Lhs, e) {
				continue
			}
		case *ast.BinaryExpr:
			if p.Op == token.EQL || p.Op == token.NEQ {
				continue
			}
		}
		return true
	}
	return false
}

func (c *checker) rootOf(x ast.Expr) types.Object {
	switch x := ast.Unparen(x).(type) {
	case *ast.Ident:
		return c.objOf(x)
	case *ast.SelectorExpr:
		if f, ok := c.info.Uses[x.Sel].(*types.Var); ok {
			return f.Origin()
		}
	}
	return nil
}

// written reports whether e is the target of an assignment.
func (c *checker) written(e ast.Expr) bool {
	e = c.outer(e)
	switch p := c.parent[e].(type) {
	case *ast.AssignStmt:
		return slices.Contains(p.Lhs, e)
	case *ast.IncDecStmt:
		return true
	case *ast.RangeStmt:
		return p.Tok == token.ASSIGN && (p.Key == e || p.Value == e)
	}
	return false
}

// printer reports whether call only formats its arguments.
func (c *checker) printer(call *ast.CallExpr) bool {
	fn, ok := typeutil.Callee(c.info, call).(*types.Func)
	if !ok || fn.Pkg() == nil {
		return false
	}
	switch fn.Pkg().Path() {
	case "fmt", "log", "log/slog":
		return true
	}
	return false
}
