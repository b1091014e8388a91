// Package rootctx defines an analyzer that reports fresh root contexts
// created where a caller's context is in reach.
//
// # Analyzer rootctx
//
// rootctx: report context.Background() and context.TODO() where a caller's context is in reach
//
// A handler that starts its work from a new root context cuts it loose
// from the request: when the client goes away or the server shuts down,
// the database query, the upstream call and the goroutines it started
// keep running to their own timeouts, holding connections and memory,
// and the request's deadline and values (trace IDs) are lost. A handler
// such as
//
//	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // reported
//	defer cancel()
//	rows, err := s.db.QueryContext(ctx, q)
//
// should derive its context from the request's:
//
//	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
//
// Reported: context.Background() and context.TODO() in a function that
// has a context.Context or *http.Request parameter, in closures and
// goroutines started there (which also reach a context variable they
// capture), and calls of same-package helpers that take no context and
// create one of their own, directly or through other helpers; the helper
// call is reported where the caller's context is in reach.
//
// Not reported: functions with no context in reach (main, init,
// constructors and Start methods rooting server-lifetime work), a context
// parameter named _, cleanup after the caller's context is done (after a
// receive from ctx.Done(), in a select case on it, in a branch that tests
// ctx.Err(), context.Cause or context.Canceled), deferred cleanup, lazy
// initialisation under sync.Once, a root stored in a struct field, the
// nil-context fallback (if ctx == nil { ctx = context.Background() }), and
// tests.
package rootctx

import (
	"go/ast"
	"go/token"
	"go/types"
	"strings"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/passes/inspect"
	"golang.org/x/tools/go/ast/inspector"
	"golang.org/x/tools/go/types/typeutil"

	"github.com/herald-hub/herald/analyzers/internal/astx"
	"github.com/herald-hub/herald/analyzers/internal/report"
)

// Analyzer reports fresh root contexts where a caller's context is in reach.
var Analyzer = &analysis.Analyzer{
	Name:     "rootctx",
	Doc:      "report context.Background() and context.TODO() where a caller's context (a ctx parameter, r.Context()) is in reach",
	URL:      "https://github.com/herald-hub/herald/blob/main/docs/leakvet/rootctx.md",
	Requires: []*analysis.Analyzer{inspect.Analyzer},
	Run:      run,
}

// source is a caller's context in reach: a context.Context variable, or
// an *http.Request whose Context method gives one.
type source struct {
	v   *types.Var
	req bool
}

// expr is the expression that yields the source's context.
func (s source) expr() string {
	if s.req {
		return s.v.Name() + ".Context()"
	}
	return s.v.Name()
}

type checker struct {
	pass  *analysis.Pass
	ctx   types.Type       // context.Context
	iface *types.Interface // its method set
	req   types.Type       // *http.Request, nil when net/http is not imported
	// helpers maps a same-package function that takes no context but
	// creates a root one, directly or through another helper, to how.
	helpers map[*types.Func]rooted
}

// rooted tells how a helper starts from a root context.
type rooted struct {
	root string      // "context.Background()" or "context.TODO()"
	via  *types.Func // the helper it calls for it, nil when it creates it
}

func run(pass *analysis.Pass) (any, error) {
	ctxType := astx.LookupType(pass.Pkg, "context", "Context")
	if ctxType == nil {
		return nil, nil // the package cannot create a context
	}
	iface, ok := ctxType.Underlying().(*types.Interface)
	if !ok {
		return nil, nil
	}
	c := &checker{pass: pass, ctx: ctxType, iface: iface, helpers: make(map[*types.Func]rooted)}
	if req := astx.LookupType(pass.Pkg, "net/http", "Request"); req != nil {
		c.req = types.NewPointer(req)
	}
	ins := pass.ResultOf[inspect.Analyzer].(*inspector.Inspector)
	filter := []ast.Node{(*ast.CallExpr)(nil)}

	// Find the helpers: functions without a context parameter whose own
	// body, run synchronously, starts from a root context or calls a
	// helper. Calls between helpers are resolved by a fixpoint.
	calls := make(map[*types.Func][]*types.Func)
	var order []*types.Func // callers in source order, for stable messages
	ins.WithStack(filter, func(n ast.Node, push bool, stack []ast.Node) bool {
		if !push {
			return true
		}
		fd, ok := stack[1].(*ast.FuncDecl)
		if !ok || !synchronous(stack) || c.exempt(stack) {
			return true
		}
		fn, ok := pass.TypesInfo.Defs[fd.Name].(*types.Func)
		if !ok || c.handlesContext(fn.Signature()) {
			return true
		}
		call := n.(*ast.CallExpr)
		if root := c.root(call); root != "" {
			if c.storedInField(stack) || compared(stack) {
				return true
			}
			if _, ok := c.helpers[fn]; !ok {
				c.helpers[fn] = rooted{root: root}
			}
		} else if callee := c.localCallee(call); callee != nil && callee != fn {
			if calls[fn] == nil {
				order = append(order, fn)
			}
			calls[fn] = append(calls[fn], callee)
		}
		return true
	})
	for changed := true; changed; {
		changed = false
		for _, fn := range order {
			if _, ok := c.helpers[fn]; ok {
				continue
			}
			for _, callee := range calls[fn] {
				if r, ok := c.helpers[callee]; ok {
					c.helpers[fn] = rooted{root: r.root, via: callee}
					changed = true
					break
				}
			}
		}
	}

	rep := report.New(pass)
	ins.WithStack(filter, func(n ast.Node, push bool, stack []ast.Node) bool {
		if !push {
			return true
		}
		call := n.(*ast.CallExpr)
		root := c.root(call)
		var helper *types.Func
		if root == "" {
			if helper = c.localCallee(call); helper == nil {
				return true
			}
			r, ok := c.helpers[helper]
			if !ok {
				return true
			}
			root = r.root
			if r.via != nil {
				root += " (through " + funcName(r.via) + ")"
			}
		}
		if c.inTest(stack) || c.exempt(stack) || (helper == nil && (c.storedInField(stack) || compared(stack))) {
			return true
		}
		cands, own := c.reach(stack)
		if len(cands) == 0 {
			return true
		}
		best := cands[0]
		for _, s := range cands {
			if !s.req {
				best = s // a context parameter beats a request's
				break
			}
		}
		goroutine := inGoroutine(stack)
		if helper != nil {
			rep.Report(call, funcName(helper)+" starts from "+root+" although "+best.v.Name()+" is in reach here: give it "+best.expr())
			return true
		}
		var fixes []analysis.SuggestedFix
		if len(cands) == 1 && own && !goroutine && c.visible(best.v, call.Pos()) {
			fixes = []analysis.SuggestedFix{{
				Message:   "use " + best.expr(),
				TextEdits: []analysis.TextEdit{{Pos: call.Pos(), End: call.End(), NewText: []byte(best.expr())}},
			}}
		}
		rep.Report(call, message(root, best, goroutine), fixes...)
		return true
	})
	return nil, nil
}

func message(root string, s source, goroutine bool) string {
	switch {
	case goroutine && s.req:
		return root + " detaches this goroutine from the request: derive it from " + s.expr() + ", through context.WithoutCancel if it must outlive the request"
	case goroutine:
		return root + " detaches this goroutine from the caller's " + s.expr() + ": derive it from " + s.expr() + ", through context.WithoutCancel if it must outlive the call"
	case s.req:
		return root + " detaches this work from the request: derive it from " + s.expr()
	default:
		return root + " ignores the caller's " + s.expr() + ": use " + s.expr()
	}
}

// funcName names fn as a reader finds it: Name, or Type.Name for a method.
func funcName(fn *types.Func) string {
	recv := fn.Signature().Recv()
	if recv == nil {
		return fn.Name()
	}
	t := recv.Type()
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	if named, ok := t.(*types.Named); ok {
		return named.Obj().Name() + "." + fn.Name()
	}
	return fn.Name()
}

// root returns "context.Background()" or "context.TODO()" when call is
// one of them, and "" otherwise.
func (c *checker) root(call *ast.CallExpr) string {
	fn, ok := typeutil.Callee(c.pass.TypesInfo, call).(*types.Func)
	if !ok || fn.Pkg() == nil || fn.Pkg().Path() != "context" || len(call.Args) != 0 {
		return ""
	}
	if name := fn.Name(); name == "Background" || name == "TODO" {
		return "context." + name + "()"
	}
	return ""
}

// localCallee returns the function of this package that call calls
// statically, if any.
func (c *checker) localCallee(call *ast.CallExpr) *types.Func {
	fn := typeutil.StaticCallee(c.pass.TypesInfo, call)
	if fn == nil || fn.Pkg() != c.pass.Pkg {
		return nil
	}
	return fn.Origin()
}

// handlesContext reports whether a function has a context of its own, a
// context.Context or *http.Request receiver or parameter (named or not),
// or gives one to its caller as a result: such a function is no helper
// that hides a root context.
func (c *checker) handlesContext(sig *types.Signature) bool {
	if r := sig.Recv(); r != nil && c.kind(r.Type()) != "" {
		return true
	}
	for _, tuple := range []*types.Tuple{sig.Params(), sig.Results()} {
		for v := range tuple.Variables() {
			if c.kind(v.Type()) != "" {
				return true
			}
		}
	}
	return false
}

// kind tells a context source's type: "ctx", "req" or "".
func (c *checker) kind(t types.Type) string {
	switch {
	case types.Identical(t, c.ctx):
		return "ctx"
	case c.req != nil && types.Identical(t, c.req):
		return "req"
	}
	return ""
}

// reach returns the caller's contexts in reach of the last node of stack,
// from the innermost function that has any: its named context and request
// parameters and, for a closure, the context variables of the enclosing
// function it captures. own tells whether they belong to the innermost
// function itself, so that the code runs while its caller waits.
func (c *checker) reach(stack []ast.Node) (found []source, own bool) {
	var inner *ast.FuncLit // the function literal just inside the current one
	for i := len(stack) - 1; i >= 0; i-- {
		var ft *ast.FuncType
		switch f := stack[i].(type) {
		case *ast.FuncDecl:
			ft = f.Type
		case *ast.FuncLit:
			ft = f.Type
		default:
			continue
		}
		seen := map[*types.Var]bool{}
		add := func(v *types.Var) {
			if seen[v] || v.Name() == "_" || v.Name() == "" {
				return
			}
			if k := c.kind(v.Type()); k != "" {
				seen[v] = true
				found = append(found, source{v: v, req: k == "req"})
			}
		}
		for _, f := range ft.Params.List {
			for _, name := range f.Names {
				if v, ok := c.pass.TypesInfo.Defs[name].(*types.Var); ok {
					add(v)
				}
			}
		}
		if inner != nil {
			outer := stack[i]
			ast.Inspect(inner, func(n ast.Node) bool {
				id, ok := n.(*ast.Ident)
				if !ok {
					return true
				}
				v, ok := c.pass.TypesInfo.Uses[id].(*types.Var)
				if ok && !v.IsField() && v.Pos() >= outer.Pos() && v.Pos() < outer.End() &&
					(v.Pos() < inner.Pos() || v.Pos() >= inner.End()) && c.kind(v.Type()) == "ctx" {
					add(v)
				}
				return true
			})
		}
		if len(found) > 0 {
			return found, inner == nil
		}
		lit, ok := stack[i].(*ast.FuncLit)
		if !ok {
			return nil, false
		}
		inner = lit
	}
	return nil, false
}

// visible reports whether v's name denotes v at pos, so that the name can
// replace a root context there.
func (c *checker) visible(v *types.Var, pos token.Pos) bool {
	scope := c.pass.Pkg.Scope().Innermost(pos)
	if scope == nil {
		return false
	}
	_, obj := scope.LookupParent(v.Name(), pos)
	return obj == v
}

// synchronous reports whether the last node of stack runs as part of its
// declared function's own body: not in a function literal or a go
// statement. stack starts with the file.
func synchronous(stack []ast.Node) bool {
	for _, n := range stack[2:] {
		switch n.(type) {
		case *ast.FuncLit, *ast.GoStmt:
			return false
		}
	}
	return true
}

func inGoroutine(stack []ast.Node) bool {
	for _, n := range stack {
		if _, ok := n.(*ast.GoStmt); ok {
			return true
		}
	}
	return false
}

// inTest reports whether the last node of stack is in a _test.go file,
// in a function taking a *testing.T, B or F or a testing.TB.
func (c *checker) inTest(stack []ast.Node) bool {
	if !strings.HasSuffix(c.pass.Fset.File(stack[0].Pos()).Name(), "_test.go") {
		return false
	}
	for _, n := range stack {
		var ft *ast.FuncType
		switch f := n.(type) {
		case *ast.FuncDecl:
			ft = f.Type
		case *ast.FuncLit:
			ft = f.Type
		default:
			continue
		}
		for _, f := range ft.Params.List {
			t := c.pass.TypesInfo.TypeOf(f.Type)
			if p, ok := t.(*types.Pointer); ok {
				t = p.Elem()
			}
			if named, ok := t.(*types.Named); ok {
				obj := named.Obj()
				if obj.Pkg() != nil && obj.Pkg().Path() == "testing" && strings.Contains(" T B F TB ", " "+obj.Name()+" ") {
					return true
				}
			}
		}
	}
	return false
}

// exempt reports whether the last node of stack sits where a fresh root
// context is the right choice: cleanup after the caller's context is
// done, deferred cleanup, lazy initialisation under sync.Once, or the
// fallback for a nil context.
func (c *checker) exempt(stack []ast.Node) bool {
	for i := 0; i < len(stack)-1; i++ {
		child := stack[i+1]
		switch p := stack[i].(type) {
		case *ast.DeferStmt:
			return true
		case *ast.IfStmt:
			if child == p.Body && (c.cancelCheck(p.Init) || c.cancelCheck(p.Cond) || c.nilGuard(p.Cond)) {
				return true
			}
		case *ast.CaseClause:
			for _, e := range p.List {
				if c.cancelCheck(e) && has(p.Body, child) {
					return true
				}
			}
			if c.doneBefore(p.Body, child) {
				return true
			}
		case *ast.CommClause:
			if child != p.Comm && c.doneRecv(p.Comm) {
				return true
			}
			if c.doneBefore(p.Body, child) {
				return true
			}
		case *ast.BlockStmt:
			if c.doneBefore(p.List, child) {
				return true
			}
		case *ast.CallExpr:
			if _, lit := child.(*ast.FuncLit); lit && c.onceCall(p) {
				return true
			}
		}
	}
	return false
}

// compared reports whether the root context at the end of stack is an
// operand of == or !=: a test for the root, not work started from it.
func compared(stack []ast.Node) bool {
	b, ok := stack[len(stack)-2].(*ast.BinaryExpr)
	return ok && (b.Op == token.EQL || b.Op == token.NEQ)
}

// has reports whether n is one of list.
func has[E ast.Node](list []E, n ast.Node) bool {
	for _, x := range list {
		if ast.Node(x) == n {
			return true
		}
	}
	return false
}

// doneBefore reports whether a statement of list before child waits on a
// context's Done channel.
func (c *checker) doneBefore(list []ast.Stmt, child ast.Node) bool {
	for _, s := range list {
		if s == child {
			return false
		}
		if c.doneRecv(s) {
			return true
		}
	}
	return false
}

// doneRecv reports whether n, outside function literals, receives from
// the Done channel of a context, other than in a select case that
// returns: code after such a select runs only when the context is live.
func (c *checker) doneRecv(n ast.Node) bool {
	if n == nil {
		return false
	}
	found := false
	ast.Inspect(n, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.CommClause:
			if k := len(n.Body); k > 0 {
				if _, ok := n.Body[k-1].(*ast.ReturnStmt); ok {
					return false
				}
			}
		case *ast.UnaryExpr:
			if n.Op == token.ARROW && c.ctxMethodCall(n.X, "Done") {
				found = true
			}
		case *ast.RangeStmt:
			if c.ctxMethodCall(n.X, "Done") {
				found = true
			}
		}
		return !found
	})
	return found
}

// cancelCheck reports whether n tests a context for cancellation:
// ctx.Err(), context.Cause, context.Canceled or context.DeadlineExceeded.
func (c *checker) cancelCheck(n ast.Node) bool {
	if n == nil {
		return false
	}
	found := false
	ast.Inspect(n, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.CallExpr:
			if c.ctxMethodCall(n, "Err") {
				found = true
			} else if fn, ok := typeutil.Callee(c.pass.TypesInfo, n).(*types.Func); ok && isContextObj(fn, "Cause") {
				found = true
			}
		case *ast.Ident:
			if v, ok := c.pass.TypesInfo.Uses[n].(*types.Var); ok && (isContextObj(v, "Canceled") || isContextObj(v, "DeadlineExceeded")) {
				found = true
			}
		}
		return !found
	})
	return found
}

func isContextObj(obj types.Object, name string) bool {
	return obj.Pkg() != nil && obj.Pkg().Path() == "context" && obj.Name() == name && obj.Parent() == obj.Pkg().Scope()
}

// ctxMethodCall reports whether e calls method name on a value that is a
// context.
func (c *checker) ctxMethodCall(e ast.Expr, name string) bool {
	call, ok := ast.Unparen(e).(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := ast.Unparen(call.Fun).(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	t := c.pass.TypesInfo.TypeOf(sel.X)
	return t != nil && types.Implements(t, c.iface)
}

// nilGuard reports whether cond compares a context or request variable
// with nil: the fallback for callers that pass none.
func (c *checker) nilGuard(cond ast.Expr) bool {
	found := false
	ast.Inspect(cond, func(n ast.Node) bool {
		b, ok := n.(*ast.BinaryExpr)
		if !ok || b.Op != token.EQL {
			return !found
		}
		for _, pair := range [][2]ast.Expr{{b.X, b.Y}, {b.Y, b.X}} {
			if c.pass.TypesInfo.Types[pair[1]].IsNil() {
				if t := c.pass.TypesInfo.TypeOf(pair[0]); t != nil && c.kind(t) != "" {
					found = true
				}
			}
		}
		return !found
	})
	return found
}

// onceCall reports whether call is sync.Once's Do or sync.OnceFunc,
// OnceValue or OnceValues: lazy initialisation of something that lives
// as long as the program.
func (c *checker) onceCall(call *ast.CallExpr) bool {
	fn, ok := typeutil.Callee(c.pass.TypesInfo, call).(*types.Func)
	if !ok || fn.Pkg() == nil || fn.Pkg().Path() != "sync" {
		return false
	}
	switch fn.Name() {
	case "OnceFunc", "OnceValue", "OnceValues":
		return true
	case "Do":
		recv := fn.Signature().Recv()
		return recv != nil && strings.HasSuffix(recv.Type().String(), "sync.Once")
	}
	return false
}

// storedInField reports whether the root context at the end of stack,
// possibly wrapped by context.WithCancel and the like, is stored in a
// struct field: the lifetime of an object, not of one call.
func (c *checker) storedInField(stack []ast.Node) bool {
	i := len(stack) - 1
	for i > 0 {
		call, ok := stack[i-1].(*ast.CallExpr)
		if !ok || !has(call.Args, stack[i]) {
			break
		}
		fn, ok := typeutil.Callee(c.pass.TypesInfo, call).(*types.Func)
		if !ok || fn.Pkg() == nil || fn.Pkg().Path() != "context" {
			break
		}
		i--
	}
	if i == 0 {
		return false
	}
	switch p := stack[i-1].(type) {
	case *ast.KeyValueExpr:
		lit, ok := stack[i-2].(*ast.CompositeLit)
		if !ok {
			return false
		}
		if t := c.pass.TypesInfo.TypeOf(lit); t != nil {
			_, isStruct := t.Underlying().(*types.Struct)
			return isStruct
		}
	case *ast.AssignStmt:
		for _, l := range p.Lhs {
			if sel, ok := ast.Unparen(l).(*ast.SelectorExpr); ok {
				if s := c.pass.TypesInfo.Selections[sel]; s != nil && s.Kind() == types.FieldVal {
					return true
				}
			}
		}
	}
	return false
}
