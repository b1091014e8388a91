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
// capture), and calls of unexported same-package helpers that take no
// context and create a root one in their own body: the call is reported
// where the caller's context is in reach, with "add a ctx parameter to X
// and pass ctx". Helpers are followed one level only, and exported
// functions without a context (convenience APIs like net.Dial) are not
// followed. A root that is returned, sent, handed to a goroutine or
// stored other than in a local variable is reported without a suggested
// fix.
//
// Not reported: functions with no context in reach (main, init,
// constructors and Start methods rooting server-lifetime work), a context
// parameter named _, cleanup after the caller's context is done (after a
// receive from ctx.Done() or from a stop channel: a chan os.Signal or one
// named done, quit, stop, shutdown, sig...; in a select case on one; in
// the branch of an if or switch where ctx.Err() != nil, errors.Is(err,
// context.Canceled) and the like hold), deferred cleanup, lazy
// initialisation under sync.Once, a root stored in a struct field
// (directly or through the local variables it is assigned to), a root
// whose cancel func is handed to context.AfterFunc or called after a
// receive from ctx.Done(), the nil-context fallback (if ctx == nil { ctx =
// context.Background() }), comparisons with a root, and everything in
// _test.go files.
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
	// helpers maps an unexported same-package function that takes no
	// context but creates a root one in its own body to the root it
	// creates: "context.Background()" or "context.TODO()".
	helpers map[*types.Func]string
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
	c := &checker{pass: pass, ctx: ctxType, iface: iface, helpers: make(map[*types.Func]string)}
	if req := astx.LookupType(pass.Pkg, "net/http", "Request"); req != nil {
		c.req = types.NewPointer(req)
	}
	ins := pass.ResultOf[inspect.Analyzer].(*inspector.Inspector)
	filter := []ast.Node{(*ast.CallExpr)(nil)}

	// Find the helpers: unexported functions without a context whose own
	// body, run synchronously, starts from a root context. Helpers are
	// followed one level only: a root buried deeper is the business of
	// the function that creates it, and an exported function without a
	// context is a convenience API whose callers chose it.
	ins.WithStack(filter, func(n ast.Node, push bool, stack []ast.Node) bool {
		if !push || c.inTest(stack) {
			return true
		}
		fd, ok := stack[1].(*ast.FuncDecl)
		if !ok || !synchronous(stack) || c.exempt(stack) {
			return true
		}
		fn, ok := pass.TypesInfo.Defs[fd.Name].(*types.Func)
		if !ok || fn.Exported() || c.handlesContext(fn.Signature()) {
			return true
		}
		if root := c.root(n.(*ast.CallExpr)); root != "" && !c.deliberate(stack) {
			if _, ok := c.helpers[fn]; !ok {
				c.helpers[fn] = root
			}
		}
		return true
	})

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
			if root = c.helpers[helper]; root == "" {
				return true
			}
		}
		if c.inTest(stack) || c.exempt(stack) || (helper == nil && c.deliberate(stack)) {
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
			name := funcName(helper)
			msg := name + " starts from " + root + " although " + best.v.Name() + " is in reach here: add a ctx parameter to " + name + " and pass " + best.expr()
			if goroutine {
				msg += outlive(best)
			}
			rep.Report(call, msg)
			return true
		}
		escapes := c.escapes(stack)
		var fixes []analysis.SuggestedFix
		if len(cands) == 1 && own && !goroutine && !escapes && c.visible(best.v, call.Pos()) {
			fixes = []analysis.SuggestedFix{{
				Message:   "use " + best.expr(),
				TextEdits: []analysis.TextEdit{{Pos: call.Pos(), End: call.End(), NewText: []byte(best.expr())}},
			}}
		}
		rep.Report(call, message(root, best, goroutine, escapes), fixes...)
		return true
	})
	return nil, nil
}

// message words a finding on a root context. goroutine tells that the
// work runs after the caller may have returned; escapes, that the
// context outlives the call in a result, a variable of a closure or the
// like.
func message(root string, s source, goroutine, escapes bool) string {
	from := "the caller's " + s.expr()
	if s.req {
		from = "the request"
	}
	switch {
	case goroutine:
		return root + " detaches this goroutine from " + from + ": derive it from " + s.expr() + outlive(s)
	case escapes:
		return root + " detaches this context from " + from + ": derive it from " + s.expr() + outlive(s)
	case s.req:
		return root + " detaches this work from the request: derive it from " + s.expr() + outlive(s)
	default:
		return root + " ignores the caller's " + s.expr() + ": use " + s.expr() + outlive(s)
	}
}

// outlive is the tail of a message that names the right root for work
// that must outlive the caller.
func outlive(s source) string {
	if s.req {
		return ", or context.WithoutCancel(" + s.expr() + ") if it must outlive the request"
	}
	return ", or context.WithoutCancel(" + s.expr() + ") if it must outlive the call"
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

// inTest reports whether the last node of stack is in a _test.go file:
// tests, examples and their helpers root their own contexts.
func (c *checker) inTest(stack []ast.Node) bool {
	return strings.HasSuffix(c.pass.Fset.File(stack[0].Pos()).Name(), "_test.go")
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
			if child == p.Body && c.nilGuard(p.Cond) {
				return true
			}
			ifDone, elseDone := c.doneWhen(p.Cond, c.errVars(p.Init))
			if child == p.Body && ifDone || child == p.Else && elseDone {
				return true
			}
		case *ast.CaseClause:
			if i >= 2 && has(p.Body, child) && c.doneCase(p, stack[i-2]) {
				return true
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
// the Done channel of a context or from a stop channel, other than in a
// select case that returns: code after such a select runs only when the
// context is live.
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
			if n.Op == token.ARROW && c.stopChan(n.X) {
				found = true
			}
		case *ast.RangeStmt:
			if c.stopChan(n.X) {
				found = true
			}
		}
		return !found
	})
	return found
}

// doneWhen tells for a condition whether the caller's context is done
// when it holds (ifDone) and when it does not (elseDone): ctx.Err() != nil,
// context.Cause(ctx) != nil, err == context.Canceled and
// errors.Is(err, context.Canceled) (or DeadlineExceeded) hold only then,
// and !, && and || combine them. errs are variables that hold ctx.Err().
func (c *checker) doneWhen(cond ast.Expr, errs []types.Object) (ifDone, elseDone bool) {
	switch e := ast.Unparen(cond).(type) {
	case *ast.UnaryExpr:
		if e.Op == token.NOT {
			t, f := c.doneWhen(e.X, errs)
			return f, t
		}
	case *ast.BinaryExpr:
		switch e.Op {
		case token.LAND, token.LOR:
			xt, xf := c.doneWhen(e.X, errs)
			yt, yf := c.doneWhen(e.Y, errs)
			if e.Op == token.LAND {
				return xt || yt, xf && yf
			}
			return xt && yt, xf || yf
		case token.EQL, token.NEQ:
			for _, pair := range [][2]ast.Expr{{e.X, e.Y}, {e.Y, e.X}} {
				var done bool // whether == means done
				switch {
				case c.pass.TypesInfo.Types[pair[1]].IsNil() && c.cancelErr(pair[0], errs):
					done = false
				case c.ctxErrValue(pair[1]):
					done = true
				default:
					continue
				}
				if (e.Op == token.EQL) == done {
					return true, false
				}
				return false, true
			}
		}
	case *ast.CallExpr:
		if fn, ok := typeutil.Callee(c.pass.TypesInfo, e).(*types.Func); ok &&
			fn.Pkg() != nil && fn.Pkg().Path() == "errors" && fn.Name() == "Is" && len(e.Args) == 2 && c.ctxErrValue(e.Args[1]) {
			return true, false
		}
	}
	return false, false
}

// doneCase reports whether a case clause of sw runs only when the
// caller's context is done: every expression of a tagless switch is such
// a condition, or every value of a tagged one is context.Canceled or
// context.DeadlineExceeded.
func (c *checker) doneCase(cc *ast.CaseClause, sw ast.Node) bool {
	s, ok := sw.(*ast.SwitchStmt)
	if !ok || len(cc.List) == 0 {
		return false
	}
	errs := c.errVars(s.Init)
	for _, e := range cc.List {
		if s.Tag == nil {
			if done, _ := c.doneWhen(e, errs); !done {
				return false
			}
		} else if !c.ctxErrValue(e) {
			return false
		}
	}
	return true
}

// errVars returns the variables that init, the init statement of an if or
// switch, sets to ctx.Err() or context.Cause(ctx).
func (c *checker) errVars(init ast.Stmt) []types.Object {
	as, ok := init.(*ast.AssignStmt)
	if !ok || len(as.Lhs) != len(as.Rhs) {
		return nil
	}
	var vars []types.Object
	for k, r := range as.Rhs {
		if id, ok := as.Lhs[k].(*ast.Ident); ok && c.cancelErr(r, nil) {
			if obj := c.pass.TypesInfo.ObjectOf(id); obj != nil {
				vars = append(vars, obj)
			}
		}
	}
	return vars
}

// cancelErr reports whether e is a context's cancellation error:
// ctx.Err(), context.Cause(ctx) or one of errs.
func (c *checker) cancelErr(e ast.Expr, errs []types.Object) bool {
	e = ast.Unparen(e)
	if id, ok := e.(*ast.Ident); ok {
		obj := c.pass.TypesInfo.Uses[id]
		for _, v := range errs {
			if obj == v {
				return true
			}
		}
		return false
	}
	if c.ctxMethodCall(e, "Err") {
		return true
	}
	call, ok := e.(*ast.CallExpr)
	if !ok {
		return false
	}
	fn, ok := typeutil.Callee(c.pass.TypesInfo, call).(*types.Func)
	return ok && isContextObj(fn, "Cause")
}

// ctxErrValue reports whether e is context.Canceled or
// context.DeadlineExceeded.
func (c *checker) ctxErrValue(e ast.Expr) bool {
	id := astx.Name(e)
	if id == nil {
		return false
	}
	v, ok := c.pass.TypesInfo.Uses[id].(*types.Var)
	return ok && (isContextObj(v, "Canceled") || isContextObj(v, "DeadlineExceeded"))
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

// stopWords mark a channel whose receive means the program or the object
// is shutting down.
var stopWords = []string{"done", "quit", "stop", "shutdown", "sig", "term", "exit", "closing"}

// stopChan reports whether e is a channel whose receive means shutdown:
// a context's Done channel, a channel of os.Signal, or a channel named
// done, quit, stop, shutdown, sig... (stopCh, quitc, sigs).
func (c *checker) stopChan(e ast.Expr) bool {
	if c.ctxMethodCall(e, "Done") {
		return true
	}
	t := c.pass.TypesInfo.TypeOf(e)
	if t == nil {
		return false
	}
	ch, ok := t.Underlying().(*types.Chan)
	if !ok {
		return false
	}
	if named, ok := ch.Elem().(*types.Named); ok {
		if obj := named.Obj(); obj.Pkg() != nil && obj.Pkg().Path() == "os" && obj.Name() == "Signal" {
			return true
		}
	}
	id := astx.Name(e)
	if id == nil {
		return false
	}
	name := strings.ToLower(id.Name)
	for _, w := range stopWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// deliberate reports whether the root context at the end of stack starts
// a lifetime of its own on purpose: it is stored in a struct field, its
// cancel func waits for the caller's context, or it is only compared.
func (c *checker) deliberate(stack []ast.Node) bool {
	if compared(stack) {
		return true
	}
	i := c.wrapped(stack)
	if i == 0 {
		return false
	}
	if c.fieldStore(stack[i], stack[:i]) {
		return true
	}
	vars := c.assigned(stack, i)
	return len(vars) > 0 && c.anyUse(stack[1], vars, func(id *ast.Ident, up []ast.Node) bool {
		return c.fieldStore(id, up) || c.cancelAfterDone(id, up)
	})
}

// escapes reports whether the root context at the end of stack, possibly
// wrapped, outlives the function: it is returned, stored, sent or handed
// to a goroutine, directly or through the variables it is assigned to.
// Replacing such a root with the caller's context would tie a longer
// lifetime to a short call, so it gets no suggested fix.
func (c *checker) escapes(stack []ast.Node) bool {
	i := c.wrapped(stack)
	if i == 0 {
		return false
	}
	if escaping(stack[i], stack[:i]) {
		return true
	}
	vars := c.assigned(stack, i)
	return len(vars) > 0 && c.anyUse(stack[1], vars, func(id *ast.Ident, up []ast.Node) bool {
		if escaping(id, up) {
			return true
		}
		for _, n := range up {
			if _, ok := n.(*ast.GoStmt); ok {
				return true
			}
		}
		return false
	})
}

// escaping reports whether the value n, whose ancestors are up, leaves
// the function's own variables: a result, an element of a composite
// literal, a value sent on a channel or stored other than in a local
// variable.
func escaping(n ast.Node, up []ast.Node) bool {
	switch p := up[len(up)-1].(type) {
	case *ast.ReturnStmt, *ast.CompositeLit, *ast.KeyValueExpr:
		return true
	case *ast.SendStmt:
		return p.Value == n
	case *ast.AssignStmt:
		for k, r := range p.Rhs {
			if r == n && len(p.Lhs) == len(p.Rhs) {
				_, local := ast.Unparen(p.Lhs[k]).(*ast.Ident)
				return !local
			}
		}
	}
	return false
}

// wrapped climbs from the root call at the end of stack through the calls
// of package context that take it as an argument (WithCancel, WithTimeout
// and the like) and returns the index in stack of the outermost one.
func (c *checker) wrapped(stack []ast.Node) int {
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
	return i
}

// assigned returns the variables that stack[i] is assigned to, in an
// assignment or a var declaration: for ctx, cancel := context.WithCancel(...)
// both ctx and cancel.
func (c *checker) assigned(stack []ast.Node, i int) []*types.Var {
	var lhs []*ast.Ident
	switch p := stack[i-1].(type) {
	case *ast.AssignStmt:
		for k, r := range p.Rhs {
			if r != stack[i] {
				continue
			}
			exprs := p.Lhs[k : k+1]
			if len(p.Rhs) == 1 {
				exprs = p.Lhs
			}
			for _, l := range exprs {
				if id, ok := ast.Unparen(l).(*ast.Ident); ok {
					lhs = append(lhs, id)
				}
			}
		}
	case *ast.ValueSpec:
		for k, v := range p.Values {
			if v != stack[i] {
				continue
			}
			if len(p.Values) == 1 {
				lhs = p.Names
			} else {
				lhs = p.Names[k : k+1]
			}
		}
	}
	var vars []*types.Var
	for _, id := range lhs {
		if v, ok := c.pass.TypesInfo.ObjectOf(id).(*types.Var); ok && !v.IsField() && v.Name() != "_" {
			vars = append(vars, v)
		}
	}
	return vars
}

// anyUse reports whether f holds for a use of one of vars in root; f gets
// the identifier and its ancestors, the innermost last.
func (c *checker) anyUse(root ast.Node, vars []*types.Var, f func(id *ast.Ident, up []ast.Node) bool) bool {
	found := false
	ast.PreorderStack(root, nil, func(n ast.Node, up []ast.Node) bool {
		if found {
			return false
		}
		id, ok := n.(*ast.Ident)
		if !ok || len(up) == 0 {
			return true
		}
		obj := c.pass.TypesInfo.Uses[id]
		for _, v := range vars {
			if obj == v && f(id, up) {
				found = true
			}
		}
		return !found
	})
	return found
}

// fieldStore reports whether the value n, whose ancestors are up, is
// stored in a struct field: a field of a struct literal, or the left of
// an assignment to a field.
func (c *checker) fieldStore(n ast.Node, up []ast.Node) bool {
	switch p := up[len(up)-1].(type) {
	case *ast.KeyValueExpr:
		return p.Value == n && len(up) >= 2 && c.structLit(up[len(up)-2])
	case *ast.CompositeLit:
		return c.structLit(p)
	case *ast.AssignStmt:
		for k, r := range p.Rhs {
			if r != n {
				continue
			}
			lhs := p.Lhs
			if len(p.Rhs) == len(p.Lhs) {
				lhs = p.Lhs[k : k+1]
			}
			for _, l := range lhs {
				if sel, ok := ast.Unparen(l).(*ast.SelectorExpr); ok {
					if s := c.pass.TypesInfo.Selections[sel]; s != nil && s.Kind() == types.FieldVal {
						return true
					}
				}
			}
		}
	}
	return false
}

func (c *checker) structLit(n ast.Node) bool {
	lit, ok := n.(*ast.CompositeLit)
	if !ok {
		return false
	}
	t := c.pass.TypesInfo.TypeOf(lit)
	if t == nil {
		return false
	}
	_, isStruct := t.Underlying().(*types.Struct)
	return isStruct
}

// cancelAfterDone reports whether the use id of a cancel func, whose
// ancestors are up, ties the root's lifetime to the caller's context: it
// is handed to context.AfterFunc, or called after a receive from a Done
// or stop channel.
func (c *checker) cancelAfterDone(id *ast.Ident, up []ast.Node) bool {
	if _, ok := c.pass.TypesInfo.Uses[id].Type().Underlying().(*types.Signature); !ok {
		return false
	}
	for _, n := range up {
		if call, ok := n.(*ast.CallExpr); ok {
			if fn, ok := typeutil.Callee(c.pass.TypesInfo, call).(*types.Func); ok && isContextObj(fn, "AfterFunc") {
				return true
			}
		}
	}
	if call, ok := up[len(up)-1].(*ast.CallExpr); !ok || call.Fun != id {
		return false
	}
	path := append(up, id)
	for i := 0; i < len(path)-1; i++ {
		child := path[i+1]
		switch p := path[i].(type) {
		case *ast.BlockStmt:
			if c.doneBefore(p.List, child) {
				return true
			}
		case *ast.CommClause:
			if child != p.Comm && c.doneRecv(p.Comm) || c.doneBefore(p.Body, child) {
				return true
			}
		case *ast.CaseClause:
			if c.doneBefore(p.Body, child) {
				return true
			}
		}
	}
	return false
}
