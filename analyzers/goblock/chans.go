package goblock

import (
	"go/ast"
	"go/constant"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/types/typeutil"
)

// chans knows, for the channel variables and struct fields of one
// package, which may be closed. Variables that hold the same channel
// (one assigned to the other, an argument and its parameter) form one
// group; a group is closed when close is called on any member, and
// unknown when a member is reachable from code the package does not see
// (an exported field, a parameter of an exported function, a channel
// handed to another package that may close it).
type chans struct {
	pass    *analysis.Pass
	decls   map[*types.Func]*ast.FuncDecl
	parent  map[types.Object]types.Object
	closed  map[types.Object]bool
	unknown map[types.Object]bool
	// params are the channel parameters of this package's functions,
	// true when every caller is a direct call the package shows.
	params map[types.Object]bool
	// makeCap is the constant capacity of a local channel made once by
	// make, -1 when it is not constant.
	makeCap map[types.Object]int64
	// makes is the make call that made a local channel.
	makes map[types.Object]*ast.CallExpr
	// assigns counts the assignments of each local channel variable.
	assigns map[types.Object]int
	// values are the package's functions used other than by a direct
	// call, and ifaceMethods the names of its interfaces' unexported
	// methods: their callers are not all in sight.
	values       map[*types.Func]bool
	ifaceMethods map[string]bool
}

func newChans(pass *analysis.Pass) *chans {
	c := &chans{
		pass:    pass,
		decls:   make(map[*types.Func]*ast.FuncDecl),
		parent:  make(map[types.Object]types.Object),
		closed:  make(map[types.Object]bool),
		unknown: make(map[types.Object]bool),
		params:  make(map[types.Object]bool),
		makeCap: make(map[types.Object]int64),
		makes:   make(map[types.Object]*ast.CallExpr),
		assigns: make(map[types.Object]int),
	}
	c.ifaceMethods = c.interfaceMethods()
	c.values = c.funcValues()
	for _, f := range pass.Files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			fn, ok := pass.TypesInfo.Defs[fd.Name].(*types.Func)
			if !ok {
				continue
			}
			c.decls[fn] = fd
			direct := !fn.Exported() && !c.values[fn] && !c.ifaceMethods[fn.Name()]
			c.recordParams(fd.Type, direct)
		}
	}
	for _, f := range pass.Files {
		var stack []ast.Node
		ast.Inspect(f, func(n ast.Node) bool {
			if n == nil {
				stack = stack[:len(stack)-1]
				return true
			}
			c.visit(n, stack)
			stack = append(stack, n)
			return true
		})
	}
	// Resolve the marks onto the roots of the groups.
	for o := range c.parent {
		r := c.find(o)
		if c.closed[o] {
			c.closed[r] = true
		}
		if c.unknown[o] || !c.trackable(o) {
			c.markUnknown(r)
		}
	}
	return c
}

// interfaceMethods returns the names of the unexported methods of the
// package's interfaces: a method of that name may be called through an
// interface, whose arguments this analysis does not follow.
func (c *chans) interfaceMethods() map[string]bool {
	names := make(map[string]bool)
	for _, tv := range c.pass.TypesInfo.Types {
		if tv.Type == nil {
			continue
		}
		if it, ok := tv.Type.Underlying().(*types.Interface); ok {
			for i := range it.NumMethods() {
				if m := it.Method(i); !m.Exported() {
					names[m.Name()] = true
				}
			}
		}
	}
	return names
}

// funcValues returns the package's functions used other than by calling
// them directly: their parameters may receive any channel.
func (c *chans) funcValues() map[*types.Func]bool {
	called := make(map[*ast.Ident]bool)
	for _, f := range c.pass.Files {
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				switch fun := ast.Unparen(call.Fun).(type) {
				case *ast.Ident:
					called[fun] = true
				case *ast.SelectorExpr:
					called[fun.Sel] = true
				case *ast.IndexExpr:
					if id, ok := fun.X.(*ast.Ident); ok {
						called[id] = true
					}
				}
			}
			return true
		})
	}
	values := make(map[*types.Func]bool)
	for id, obj := range c.pass.TypesInfo.Uses {
		if fn, ok := obj.(*types.Func); ok && fn.Pkg() == c.pass.Pkg && !called[id] {
			values[fn.Origin()] = true
		}
	}
	return values
}

func (c *chans) recordParams(ft *ast.FuncType, direct bool) {
	if ft.Params != nil {
		for _, fl := range ft.Params.List {
			for _, nm := range fl.Names {
				if o := c.pass.TypesInfo.Defs[nm]; o != nil && isChan(o.Type()) {
					c.params[o] = direct
				}
			}
		}
	}
	if ft.Results != nil {
		for _, fl := range ft.Results.List {
			for _, nm := range fl.Names {
				if o := c.pass.TypesInfo.Defs[nm]; o != nil && isChan(o.Type()) {
					c.params[o] = false
				}
			}
		}
	}
}

func (c *chans) visit(n ast.Node, stack []ast.Node) {
	info := c.pass.TypesInfo
	switch n := n.(type) {
	case *ast.FuncLit:
		direct := len(stack) > 0
		if direct {
			call, ok := stack[len(stack)-1].(*ast.CallExpr)
			direct = ok && ast.Unparen(call.Fun) == n
		}
		c.recordParams(n.Type, direct)
	case *ast.AssignStmt:
		if len(n.Lhs) == len(n.Rhs) {
			for i := range n.Lhs {
				c.flow(n.Lhs[i], n.Rhs[i])
			}
			return
		}
		for _, l := range n.Lhs {
			if o := c.object(l); o != nil && isChan(o.Type()) {
				c.markUnknown(o)
			}
		}
	case *ast.ValueSpec:
		for i, nm := range n.Names {
			if i < len(n.Values) && len(n.Values) == len(n.Names) {
				c.flow(nm, n.Values[i])
			} else if o := info.Defs[nm]; o != nil && isChan(o.Type()) && len(n.Values) > 0 {
				c.markUnknown(o)
			}
		}
	case *ast.RangeStmt:
		for _, e := range []ast.Expr{n.Key, n.Value} {
			if o := c.object(e); o != nil && isChan(o.Type()) {
				c.markUnknown(o)
			}
		}
	case *ast.CompositeLit:
		c.composite(n)
	case *ast.CallExpr:
		c.call(n)
	case *ast.SendStmt:
		c.escape(n.Value, elemOf(info.TypeOf(n.Chan)))
	case *ast.ReturnStmt:
		sig := enclosingSig(info, stack)
		if sig == nil || sig.Results().Len() != len(n.Results) {
			for _, r := range n.Results {
				c.escape(r, nil)
			}
			return
		}
		for i, r := range n.Results {
			c.escape(r, sig.Results().At(i).Type())
		}
	case *ast.UnaryExpr:
		if n.Op == token.AND {
			c.escape(n.X, nil)
		}
	}
}

// flow records the assignment of rhs to lhs.
func (c *chans) flow(lhs, rhs ast.Expr) {
	info := c.pass.TypesInfo
	if id, ok := lhs.(*ast.Ident); ok && id.Name == "_" {
		return
	}
	lo := c.object(lhs)
	if lo != nil && isChan(lo.Type()) {
		c.assigns[lo]++
	}
	if !isChan(info.TypeOf(rhs)) {
		if lo != nil && isChan(lo.Type()) && !isNil(info, rhs) {
			c.markUnknown(lo)
		}
		return
	}
	if lo == nil || !isChan(lo.Type()) {
		c.escape(rhs, info.TypeOf(lhs))
		return
	}
	if ro := c.object(rhs); ro != nil {
		c.union(lo, ro)
		return
	}
	if call, ok := ast.Unparen(rhs).(*ast.CallExpr); ok && isBuiltin(info, call, "make") {
		c.touch(lo)
		if c.assigns[lo] == 1 {
			c.makes[lo] = call
			c.makeCap[lo] = 0
			if len(call.Args) > 1 {
				c.makeCap[lo] = -1
				if tv := info.Types[call.Args[1]]; tv.Value != nil {
					if v, ok := constant.Int64Val(tv.Value); ok {
						c.makeCap[lo] = v
					}
				}
			}
		}
		return
	}
	c.markUnknown(lo)
}

func (c *chans) composite(n *ast.CompositeLit) {
	info := c.pass.TypesInfo
	t := info.TypeOf(n)
	if t == nil {
		return
	}
	st, ok := t.Underlying().(*types.Struct)
	if !ok {
		if p, isPtr := t.Underlying().(*types.Pointer); isPtr {
			st, ok = p.Elem().Underlying().(*types.Struct)
		}
	}
	for i, e := range n.Elts {
		if kv, isKV := e.(*ast.KeyValueExpr); isKV {
			if id, isID := kv.Key.(*ast.Ident); isID && ok {
				if f, isVar := info.Uses[id].(*types.Var); isVar && f.IsField() {
					c.flowTo(f, kv.Value)
					continue
				}
			}
			c.escape(kv.Key, nil)
			c.escape(kv.Value, nil)
			continue
		}
		if ok && i < st.NumFields() {
			c.flowTo(st.Field(i), e)
			continue
		}
		c.escape(e, nil)
	}
}

// flowTo records the assignment of e to the variable v.
func (c *chans) flowTo(v *types.Var, e ast.Expr) {
	if !isChan(v.Type()) {
		c.escape(e, v.Type())
		return
	}
	if ro := c.object(e); ro != nil {
		c.union(v, ro)
		return
	}
	if call, ok := ast.Unparen(e).(*ast.CallExpr); ok && isBuiltin(c.pass.TypesInfo, call, "make") {
		c.touch(v)
		return
	}
	if !isNil(c.pass.TypesInfo, e) {
		c.markUnknown(v)
	}
}

func (c *chans) call(call *ast.CallExpr) {
	info := c.pass.TypesInfo
	if tv := info.Types[call.Fun]; tv.IsType() {
		for _, a := range call.Args {
			c.escape(a, tv.Type)
		}
		return
	}
	if id, ok := ast.Unparen(call.Fun).(*ast.Ident); ok {
		if b, ok := info.Uses[id].(*types.Builtin); ok {
			switch b.Name() {
			case "close":
				if len(call.Args) == 1 {
					if o := c.object(call.Args[0]); o != nil {
						c.touch(o)
						c.closed[o] = true
					}
				}
			case "len", "cap":
			default:
				for _, a := range call.Args {
					c.escape(a, nil)
				}
			}
			return
		}
	}
	var params *types.Tuple
	variadic := false
	if lit, ok := ast.Unparen(call.Fun).(*ast.FuncLit); ok {
		if sig, ok := info.TypeOf(lit).(*types.Signature); ok {
			params, variadic = lit2params(info, lit), sig.Variadic()
		}
	} else if fn := typeutil.StaticCallee(info, call); fn != nil && c.decls[fn.Origin()] != nil {
		params, variadic = fn.Origin().Signature().Params(), fn.Signature().Variadic()
	}
	if params == nil || call.Ellipsis.IsValid() {
		var sig *types.Signature
		if t := info.TypeOf(call.Fun); t != nil {
			sig, _ = t.Underlying().(*types.Signature)
		}
		for i, a := range call.Args {
			var dst types.Type
			if sig != nil && i < sig.Params().Len() && !(sig.Variadic() && i >= sig.Params().Len()-1) {
				dst = sig.Params().At(i).Type()
			}
			c.escape(a, dst)
		}
		return
	}
	for i, a := range call.Args {
		if i >= params.Len() || (variadic && i >= params.Len()-1) {
			c.escape(a, nil)
			continue
		}
		c.flowTo(params.At(i), a)
	}
}

// lit2params returns the parameters of lit as the objects its body uses.
func lit2params(info *types.Info, lit *ast.FuncLit) *types.Tuple {
	var vars []*types.Var
	for _, fl := range lit.Type.Params.List {
		if len(fl.Names) == 0 {
			vars = append(vars, types.NewParam(token.NoPos, nil, "_", info.TypeOf(fl.Type)))
			continue
		}
		for _, nm := range fl.Names {
			v, _ := info.Defs[nm].(*types.Var)
			if v == nil {
				v = types.NewParam(token.NoPos, nil, "_", info.TypeOf(fl.Type))
			}
			vars = append(vars, v)
		}
	}
	return types.NewTuple(vars...)
}

// escape records that the channel e goes where the package no longer
// follows it, as a value of type dst (nil: unknown). A receive-only
// destination cannot close it, so that is no escape.
func (c *chans) escape(e ast.Expr, dst types.Type) {
	if e == nil || !isChan(c.pass.TypesInfo.TypeOf(e)) {
		return
	}
	if dst != nil {
		if ch, ok := dst.Underlying().(*types.Chan); ok && ch.Dir() == types.RecvOnly {
			return
		}
	}
	if o := c.object(e); o != nil {
		c.touch(o)
		c.markUnknown(o)
	}
}

// object returns the variable or field that e denotes, or nil.
func (c *chans) object(e ast.Expr) types.Object {
	info := c.pass.TypesInfo
	switch e := ast.Unparen(e).(type) {
	case *ast.Ident:
		if v, ok := info.ObjectOf(e).(*types.Var); ok {
			return v
		}
	case *ast.SelectorExpr:
		if v, ok := info.ObjectOf(e.Sel).(*types.Var); ok {
			return v
		}
	}
	return nil
}

func (c *chans) markUnknown(o types.Object) {
	c.touch(o)
	c.unknown[o] = true
}

func (c *chans) touch(o types.Object) {
	if _, ok := c.parent[o]; !ok {
		c.parent[o] = o
	}
}

func (c *chans) find(o types.Object) types.Object {
	c.touch(o)
	for c.parent[o] != o {
		c.parent[o] = c.parent[c.parent[o]]
		o = c.parent[o]
	}
	return o
}

func (c *chans) union(a, b types.Object) {
	ra, rb := c.find(a), c.find(b)
	if ra != rb {
		c.parent[ra] = rb
	}
}

// trackable reports whether every use of o is in this package's code.
func (c *chans) trackable(o types.Object) bool {
	v, ok := o.(*types.Var)
	if !ok || v.Pkg() != c.pass.Pkg {
		return false
	}
	if direct, isParam := c.params[v]; isParam {
		return direct
	}
	if v.IsField() || v.Parent() == c.pass.Pkg.Scope() {
		return !v.Exported()
	}
	return true
}

// neverClosed reports whether the channel e denotes is known to be
// closed nowhere.
func (c *chans) neverClosed(e ast.Expr) bool {
	o := c.object(e)
	if o == nil || !isChan(o.Type()) {
		return false
	}
	if _, seen := c.parent[o]; !seen {
		return c.trackable(o)
	}
	r := c.find(o)
	return !c.closed[r] && !c.unknown[r]
}

// followed reports whether every holder of the channel o is known.
func (c *chans) followed(o types.Object) bool {
	if _, seen := c.parent[o]; !seen {
		return c.trackable(o)
	}
	return !c.unknown[c.find(o)]
}

func enclosingSig(info *types.Info, stack []ast.Node) *types.Signature {
	for i := len(stack) - 1; i >= 0; i-- {
		switch f := stack[i].(type) {
		case *ast.FuncLit:
			sig, _ := info.TypeOf(f).(*types.Signature)
			return sig
		case *ast.FuncDecl:
			if fn, ok := info.Defs[f.Name].(*types.Func); ok {
				return fn.Signature()
			}
			return nil
		}
	}
	return nil
}

func isChan(t types.Type) bool {
	if t == nil {
		return false
	}
	_, ok := t.Underlying().(*types.Chan)
	return ok
}

func elemOf(t types.Type) types.Type {
	if t == nil {
		return nil
	}
	if ch, ok := t.Underlying().(*types.Chan); ok {
		return ch.Elem()
	}
	return nil
}

func isNil(info *types.Info, e ast.Expr) bool {
	return info.Types[e].IsNil()
}

func isBuiltin(info *types.Info, call *ast.CallExpr, name string) bool {
	id, ok := ast.Unparen(call.Fun).(*ast.Ident)
	if !ok {
		return false
	}
	b, ok := info.Uses[id].(*types.Builtin)
	return ok && b.Name() == name
}
