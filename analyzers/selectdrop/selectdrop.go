// Package selectdrop defines an analyzer that reports selects with a
// default branch that drop an error or a done signal.
//
// # Analyzer selectdrop
//
// selectdrop: report non-blocking selects that drop an error or ignore a done signal
//
// A select with a default branch never waits, so whatever one of its
// cases receives or sends is handled right there or lost. Three losses
// reach production quietly: an error received from a worker and thrown
// away, so the request succeeds with half its work missing; an error sent
// on an unbuffered channel whose reader is busy at that instant, so the
// failure vanishes; and a done channel observed with an empty case, so a
// streaming loop keeps writing, holding its goroutine and connection,
// after the client went away or the server began to shut down. A loop
// such as
//
//	for {
//		select {
//		case <-ctx.Done(): // reported
//		default:
//		}
//		send(w, next())
//	}
//
// should leave when the signal comes:
//
//	for {
//		select {
//		case <-ctx.Done():
//			return
//		default:
//		}
//		send(w, next())
//	}
//
// Reported, at the case: a receive from a channel of errors (or of
// structs carrying an error) whose value is unused and whose body does
// nothing; a send on a channel of errors whose every make in the package
// is unbuffered, when the default does nothing either; and, inside a
// loop, an empty case on ctx.Done() or on a struct{} channel named like
// done, quit or stop, when nothing else in the loop looks at that signal.
//
// Not reported: cases that use the error or act on it; sends on buffered
// channels ("the first error wins"); a default that logs, counts or
// otherwise handles the drop; the close-once idiom; drain loops whose
// default leaves the loop; and empty cases that carry a comment, which
// records that the drop is meant.
package selectdrop

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/token"
	"go/types"
	"strings"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/passes/inspect"
	"golang.org/x/tools/go/ast/inspector"

	"github.com/herald-hub/herald/analyzers/internal/astx"
	"github.com/herald-hub/herald/analyzers/internal/report"
)

// Analyzer reports selects with a default branch that drop an error or a
// done signal.
var Analyzer = &analysis.Analyzer{
	Name:     "selectdrop",
	Doc:      "report non-blocking selects that drop an error or ignore a done signal",
	URL:      "https://github.com/herald-hub/herald/blob/main/docs/leakvet/selectdrop.md",
	Requires: []*analysis.Analyzer{inspect.Analyzer},
	Run:      run,
}

const (
	msgRecv      = "error received from %[1]s is dropped in a select with default; handle the error received from %[1]s (return or log it)"
	msgSend      = "error sent on unbuffered %[1]s is lost when no receiver is ready (the select has a default); make %[1]s buffered or block on the send with a ctx.Done() case"
	msgDone      = "%[1]s is observed and ignored in a select with default, so the loop keeps running; return (or break the loop) when %[2]s"
	msgDoneBreak = "%[1]s is observed and ignored in a select with default: this break only leaves the select, so the loop keeps running; return (or break the loop) when %[2]s"
)

func run(pass *analysis.Pass) (any, error) {
	rep := report.New(pass)
	ins := pass.ResultOf[inspect.Analyzer].(*inspector.Inspector)
	var origins *chanOrigins // built on the first send that needs it
	ins.WithStack([]ast.Node{(*ast.SelectStmt)(nil)}, func(n ast.Node, push bool, stack []ast.Node) bool {
		if !push {
			return true
		}
		sel := n.(*ast.SelectStmt)
		def := defaultClause(sel)
		if def == nil {
			return true
		}
		file, _ := stack[0].(*ast.File)
		c := &check{pass: pass, file: file, sel: sel, def: def, stack: stack}
		for _, s := range sel.Body.List {
			cc := s.(*ast.CommClause)
			switch comm := cc.Comm.(type) {
			case *ast.SendStmt:
				if !c.silentDefault() || !carriesError(pass.TypesInfo.TypeOf(comm.Chan)) {
					continue
				}
				if origins == nil {
					origins = newChanOrigins(pass)
				}
				if origins.unbuffered(comm.Chan) {
					rep.ReportRange(cc.Pos(), cc.Colon+1, fmt.Sprintf(msgSend, types.ExprString(comm.Chan)))
				}
			case *ast.ExprStmt, *ast.AssignStmt:
				c.receive(rep, cc)
			}
		}
		return true
	})
	return nil, nil
}

// check holds one select with a default branch.
type check struct {
	pass  *analysis.Pass
	file  *ast.File
	sel   *ast.SelectStmt
	def   *ast.CommClause
	stack []ast.Node // from the file down to sel
}

// receive reports cc when it drops an error or ignores a done signal.
func (c *check) receive(rep *report.Reporter, cc *ast.CommClause) {
	recv, lhs := receiveOf(cc.Comm)
	if recv == nil || c.commented(cc, true) {
		return
	}
	info := c.pass.TypesInfo
	ch := recv.X
	if carriesError(info.TypeOf(ch)) {
		if len(lhs) > 0 {
			id, ok := ast.Unparen(lhs[0]).(*ast.Ident)
			if !ok {
				return // stored in a field or an element: kept for later
			}
			if id.Name != "_" {
				if as := cc.Comm.(*ast.AssignStmt); as.Tok != token.DEFINE {
					return // assigned to a variable of the enclosing code
				}
				if used(info, cc.Body, info.Defs[id]) {
					return
				}
			}
		}
		if idle(cc.Body, false) {
			rep.ReportRange(cc.Pos(), cc.Colon+1, fmt.Sprintf(msgRecv, types.ExprString(ch)))
		}
		return
	}
	if len(lhs) > 0 {
		return
	}
	sig, when := c.doneSignal(ch)
	if sig == "" {
		return
	}
	breaks := len(cc.Body) == 1 && isBareBreak(cc.Body[0])
	if len(cc.Body) > 0 && !breaks {
		return
	}
	loop := c.loop()
	if loop == nil || endsInJump(c.def.Body) || mentions(info, c.def.Body, ch) {
		return
	}
	if bounded(info, loop) && len(c.def.Body) > 0 {
		return // an empty case skips the work of the default: that is acting on it
	}
	if len(c.def.Body) == 0 && onlyStmt(loop, c.sel) {
		return // the loop does nothing else: a benchmark of select itself
	}
	if c.checkedElsewhere(loop, recv, ch) {
		return
	}
	msg := msgDone
	if breaks {
		msg = msgDoneBreak
	}
	rep.ReportRange(cc.Pos(), cc.Colon+1, fmt.Sprintf(msg, sig, when))
}

// receiveOf returns the receive of a select case and what it assigns to.
func receiveOf(comm ast.Stmt) (*ast.UnaryExpr, []ast.Expr) {
	var x ast.Expr
	var lhs []ast.Expr
	switch comm := comm.(type) {
	case *ast.ExprStmt:
		x = comm.X
	case *ast.AssignStmt:
		if len(comm.Rhs) != 1 {
			return nil, nil
		}
		x, lhs = comm.Rhs[0], comm.Lhs
	}
	u, ok := ast.Unparen(x).(*ast.UnaryExpr)
	if !ok || u.Op != token.ARROW {
		return nil, nil
	}
	return u, lhs
}

// doneSignal describes ch when it is a done signal: a Done() call
// returning a struct{} channel, or a struct{} channel named like one.
func (c *check) doneSignal(ch ast.Expr) (sig, when string) {
	ch = ast.Unparen(ch)
	if !isSignalChan(c.pass.TypesInfo.TypeOf(ch)) {
		return "", ""
	}
	switch e := ch.(type) {
	case *ast.CallExpr:
		sel, ok := ast.Unparen(e.Fun).(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "Done" || len(e.Args) != 0 {
			return "", ""
		}
		x := types.ExprString(sel.X)
		return x + ".Done()", x + " is done"
	case *ast.Ident:
		if doneName(e.Name) {
			return e.Name, e.Name + " fires"
		}
	case *ast.SelectorExpr:
		if doneName(e.Sel.Name) {
			x := types.ExprString(e)
			return x, x + " fires"
		}
	}
	return "", ""
}

func doneName(name string) bool {
	name = strings.ToLower(name)
	for _, w := range []string{"done", "quit", "stop", "clos", "shutdown", "exit", "cancel", "abort", "kill", "finish"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

func isSignalChan(t types.Type) bool {
	if t == nil {
		return false
	}
	ch, ok := t.Underlying().(*types.Chan)
	if !ok || ch.Dir() == types.SendOnly {
		return false
	}
	st, ok := ch.Elem().Underlying().(*types.Struct)
	return ok && st.NumFields() == 0
}

// loop returns the innermost loop around the select in its function.
func (c *check) loop() ast.Stmt {
	for i := len(c.stack) - 2; i >= 0; i-- {
		switch n := c.stack[i].(type) {
		case *ast.FuncLit, *ast.FuncDecl:
			return nil
		case *ast.ForStmt:
			return n
		case *ast.RangeStmt:
			return n
		}
	}
	return nil
}

// bounded reports whether loop ends on its own: a three-clause for, or a
// range over anything but a channel or a function.
func bounded(info *types.Info, loop ast.Stmt) bool {
	switch l := loop.(type) {
	case *ast.ForStmt:
		return l.Cond != nil && l.Post != nil
	case *ast.RangeStmt:
		t := info.TypeOf(l.X)
		if t == nil {
			return false
		}
		switch t.Underlying().(type) {
		case *types.Chan, *types.Signature:
			return false
		}
		return true
	}
	return false
}

// onlyStmt reports whether s is all the body of loop.
func onlyStmt(loop ast.Stmt, s ast.Stmt) bool {
	body := astx.LoopBody(loop)
	return body != nil && len(body.List) == 1 && body.List[0] == s
}

// checkedElsewhere reports whether the loop looks at the signal of ch in
// another place than recv: receiving it again, calling Err or Done on
// the same context, or handing the context to a function that answers
// a bool.
func (c *check) checkedElsewhere(loop ast.Stmt, recv *ast.UnaryExpr, ch ast.Expr) bool {
	info := c.pass.TypesInfo
	var ctx string
	if call, ok := ast.Unparen(ch).(*ast.CallExpr); ok {
		ctx = types.ExprString(ast.Unparen(call.Fun).(*ast.SelectorExpr).X)
	}
	chObj := objectOf(info, ch)
	found := false
	ast.Inspect(loop, func(n ast.Node) bool {
		if found || n == recv {
			return false
		}
		switch n := n.(type) {
		case *ast.CallExpr:
			if ctx == "" {
				break
			}
			if sel, ok := ast.Unparen(n.Fun).(*ast.SelectorExpr); ok && types.ExprString(sel.X) == ctx {
				switch sel.Sel.Name {
				case "Err", "Done":
					found = true
				}
			}
			if t, ok := info.TypeOf(n).(*types.Basic); ok && t.Kind() == types.Bool {
				for _, a := range n.Args {
					if types.ExprString(a) == ctx {
						found = true
					}
				}
			}
			if sel, ok := ast.Unparen(n.Fun).(*ast.SelectorExpr); ok && sel.Sel.Name == "Cause" && len(n.Args) == 1 && types.ExprString(n.Args[0]) == ctx {
				found = true
			}
		case *ast.Ident, *ast.SelectorExpr:
			if chObj != nil && objectOf(info, n.(ast.Expr)) == chObj {
				found = true
				return false
			}
		}
		return !found
	})
	return found
}

// silentDefault reports whether the default branch lets a value go
// without a trace: it is empty or only jumps, and carries no comment.
func (c *check) silentDefault() bool {
	return idle(c.def.Body, true) && !c.commented(c.def, false)
}

// commented reports whether a comment sits inside the clause cc, after
// its colon: an empty case with a comment is a decision, not a slip. With
// ownLine, a comment at the end of the case line does not count: that is
// where notes about the case itself go.
func (c *check) commented(cc *ast.CommClause, ownLine bool) bool {
	if c.file == nil {
		return false
	}
	end := c.sel.Body.Rbrace
	for _, s := range c.sel.Body.List {
		if s.Pos() > cc.Colon && s.Pos() < end {
			end = s.Pos()
		}
	}
	line := c.pass.Fset.Position(cc.Colon).Line
	for _, g := range c.file.Comments {
		if g.Pos() > cc.Colon && g.Pos() < end && (!ownLine || c.pass.Fset.Position(g.Pos()).Line > line) {
			return true
		}
	}
	return false
}

func defaultClause(sel *ast.SelectStmt) *ast.CommClause {
	for _, s := range sel.Body.List {
		if cc := s.(*ast.CommClause); cc.Comm == nil {
			return cc
		}
	}
	return nil
}

// idle reports whether body does nothing with what the case received:
// only blank assignments of plain values, a bare break, or a continue
// (and, when jumps is set, any return, goto or labeled break).
func idle(body []ast.Stmt, jumps bool) bool {
	for _, s := range body {
		switch s := s.(type) {
		case *ast.EmptyStmt:
		case *ast.AssignStmt:
			if s.Tok != token.ASSIGN || !allBlank(s.Lhs) {
				return false
			}
			for _, r := range s.Rhs {
				switch ast.Unparen(r).(type) {
				case *ast.Ident, *ast.SelectorExpr, *ast.BasicLit:
				default:
					return false
				}
			}
		case *ast.BranchStmt:
			switch {
			case s.Tok == token.CONTINUE && s.Label == nil, isBareBreak(s):
			case jumps && s.Tok != token.FALLTHROUGH:
			default:
				return false
			}
		case *ast.ReturnStmt:
			if !jumps {
				return false
			}
			for _, r := range s.Results {
				if _, ok := r.(*ast.CallExpr); ok {
					return false // the return value is built: something is done
				}
			}
		default:
			return false
		}
	}
	return true
}

func allBlank(lhs []ast.Expr) bool {
	for _, l := range lhs {
		if id, ok := ast.Unparen(l).(*ast.Ident); !ok || id.Name != "_" {
			return false
		}
	}
	return true
}

func isBareBreak(s ast.Stmt) bool {
	b, ok := s.(*ast.BranchStmt)
	return ok && b.Tok == token.BREAK && b.Label == nil
}

// endsInJump reports whether body leaves the select other than by
// falling out of it: then the code after the select, or leaving the
// loop, is what happens on the signal (a drain loop, for instance).
func endsInJump(body []ast.Stmt) bool {
	if len(body) == 0 {
		return false
	}
	switch s := body[len(body)-1].(type) {
	case *ast.ReturnStmt:
		return true
	case *ast.BranchStmt:
		return !isBareBreak(s) && s.Tok != token.FALLTHROUGH
	case *ast.ExprStmt:
		if call, ok := s.X.(*ast.CallExpr); ok {
			if id, ok := ast.Unparen(call.Fun).(*ast.Ident); ok && id.Name == "panic" {
				return true
			}
		}
	}
	return false
}

// used reports whether obj is read in body other than by `_ = obj`.
func used(info *types.Info, body []ast.Stmt, obj types.Object) bool {
	if obj == nil {
		return true
	}
	blanked := map[*ast.Ident]bool{}
	found := false
	for _, s := range body {
		ast.Inspect(s, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok && as.Tok == token.ASSIGN && allBlank(as.Lhs) {
				for _, r := range as.Rhs {
					if id, ok := ast.Unparen(r).(*ast.Ident); ok {
						blanked[id] = true
					}
				}
			}
			if id, ok := n.(*ast.Ident); ok && !blanked[id] && info.Uses[id] == obj {
				found = true
			}
			return !found
		})
	}
	return found
}

// mentions reports whether body refers to the channel ch, as the
// close-once idiom does: select { case <-stop: default: close(stop) }.
func mentions(info *types.Info, body []ast.Stmt, ch ast.Expr) bool {
	obj := objectOf(info, ch)
	if obj == nil {
		return false
	}
	found := false
	for _, s := range body {
		ast.Inspect(s, func(n ast.Node) bool {
			if e, ok := n.(ast.Expr); ok && objectOf(info, e) == obj {
				found = true
			}
			return !found
		})
	}
	return found
}

// objectOf returns the variable or field an identifier or selector
// names.
func objectOf(info *types.Info, e ast.Expr) types.Object {
	switch e := ast.Unparen(e).(type) {
	case *ast.Ident:
		if v, ok := info.Uses[e].(*types.Var); ok {
			return v
		}
		if v, ok := info.Defs[e].(*types.Var); ok {
			return v
		}
	case *ast.SelectorExpr:
		if s, ok := info.Selections[e]; ok {
			if s.Kind() == types.FieldVal {
				return s.Obj()
			}
			return nil
		}
		if v, ok := info.Uses[e.Sel].(*types.Var); ok {
			return v // a package-qualified variable
		}
	}
	return nil
}

var errorType = types.Universe.Lookup("error").Type()

// carriesError reports whether t is a channel whose values are errors or
// structs (or pointers to structs) with an error field.
func carriesError(t types.Type) bool {
	if t == nil {
		return false
	}
	ch, ok := t.Underlying().(*types.Chan)
	if !ok {
		return false
	}
	elem := ch.Elem()
	if isError(elem) {
		return true
	}
	if p, ok := elem.Underlying().(*types.Pointer); ok {
		elem = p.Elem()
	}
	st, ok := elem.Underlying().(*types.Struct)
	if !ok {
		return false
	}
	for f := range st.Fields() {
		if types.Identical(f.Type(), errorType) {
			return true
		}
	}
	return false
}

func isError(t types.Type) bool {
	if types.Identical(t, errorType) {
		return true
	}
	if types.IsInterface(t) {
		return false
	}
	iface := errorType.Underlying().(*types.Interface)
	return types.Implements(t, iface)
}

// chanOrigins knows, for the channel variables and fields of a package,
// every value stored in them within the package.
type chanOrigins struct {
	info    *types.Info
	pkg     *types.Package
	stores  map[*types.Var][]ast.Expr
	unknown map[*types.Var]bool // stored from something that cannot be followed
	fed     map[*types.Var]bool // parameters whose every argument is in stores
	memo    map[*types.Var]int8
}

func newChanOrigins(pass *analysis.Pass) *chanOrigins {
	o := &chanOrigins{
		info:    pass.TypesInfo,
		pkg:     pass.Pkg,
		stores:  map[*types.Var][]ast.Expr{},
		unknown: map[*types.Var]bool{},
		fed:     map[*types.Var]bool{},
		memo:    map[*types.Var]int8{},
	}
	info := pass.TypesInfo
	store := func(lhs ast.Expr, rhs ast.Expr) {
		if v, ok := objectOf(info, lhs).(*types.Var); ok {
			if rhs == nil {
				o.unknown[v] = true
			} else {
				o.stores[v] = append(o.stores[v], rhs)
			}
		}
	}
	// Unexported package functions, their parameters, and whether they
	// are used as values (then their callers are not all known).
	params := map[*types.Func][]*types.Var{}
	called := map[*ast.Ident]bool{}
	for _, f := range pass.Files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil || fd.Name.IsExported() {
				continue
			}
			if fn, ok := info.Defs[fd.Name].(*types.Func); ok {
				params[fn] = paramVars(fn.Signature())
			}
		}
	}
	feed := func(ps []*types.Var, variadic bool, call *ast.CallExpr) {
		for i, p := range ps {
			switch {
			case call.Ellipsis.IsValid() || len(call.Args) != len(ps) || (variadic && i == len(ps)-1):
				o.unknown[p] = true
			default:
				o.stores[p] = append(o.stores[p], call.Args[i])
				o.fed[p] = true
			}
		}
	}
	for _, f := range pass.Files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for i, l := range n.Lhs {
					var r ast.Expr
					if len(n.Lhs) == len(n.Rhs) {
						r = n.Rhs[i]
					}
					store(l, r)
				}
			case *ast.ValueSpec:
				if len(n.Values) == 0 {
					break
				}
				for i, name := range n.Names {
					var r ast.Expr
					if len(n.Names) == len(n.Values) {
						r = n.Values[i]
					}
					store(name, r)
				}
			case *ast.RangeStmt:
				for _, e := range []ast.Expr{n.Key, n.Value} {
					if e != nil {
						store(e, nil)
					}
				}
			case *ast.UnaryExpr:
				if n.Op == token.AND {
					store(n.X, nil)
				}
			case *ast.CompositeLit:
				st, ok := typeOf(info, n).(*types.Struct)
				if !ok {
					break
				}
				for i, elt := range n.Elts {
					if kv, ok := elt.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok {
							if fv, ok := info.Uses[k].(*types.Var); ok && fv.IsField() {
								o.stores[fv] = append(o.stores[fv], kv.Value)
							}
						}
					} else if i < st.NumFields() {
						o.stores[st.Field(i)] = append(o.stores[st.Field(i)], elt)
					}
				}
			case *ast.CallExpr:
				switch fun := ast.Unparen(n.Fun).(type) {
				case *ast.FuncLit:
					if sig, ok := info.TypeOf(fun).(*types.Signature); ok {
						feed(paramVars(sig), sig.Variadic(), n)
					}
				case *ast.Ident:
					if fn, ok := info.Uses[fun].(*types.Func); ok {
						if ps, ok := params[fn.Origin()]; ok {
							called[fun] = true
							feed(ps, fn.Signature().Variadic(), n)
						}
					}
				}
			}
			return true
		})
	}
	// A function used as a value has callers we cannot see.
	for id, obj := range info.Uses {
		fn, ok := obj.(*types.Func)
		if !ok || called[id] {
			continue
		}
		for _, p := range params[fn.Origin()] {
			o.unknown[p] = true
		}
	}
	return o
}

func paramVars(sig *types.Signature) []*types.Var {
	var ps []*types.Var
	for p := range sig.Params().Variables() {
		ps = append(ps, p)
	}
	return ps
}

func typeOf(info *types.Info, lit *ast.CompositeLit) types.Type {
	t := info.TypeOf(lit)
	if t == nil {
		return nil
	}
	if p, ok := t.Underlying().(*types.Pointer); ok {
		t = p.Elem()
	}
	return t.Underlying()
}

// unbuffered reports whether every channel that ch may hold was made in
// this package without a buffer.
func (o *chanOrigins) unbuffered(ch ast.Expr) bool {
	ch = ast.Unparen(ch)
	if call, ok := ch.(*ast.CallExpr); ok {
		return o.madeUnbuffered(call) == 1
	}
	v, ok := objectOf(o.info, ch).(*types.Var)
	return ok && o.varUnbuffered(v)
}

// madeUnbuffered answers 1 for make(chan T) or make(chan T, 0), 0 for
// another make, and -1 for anything that is not a make.
func (o *chanOrigins) madeUnbuffered(call *ast.CallExpr) int {
	id, ok := ast.Unparen(call.Fun).(*ast.Ident)
	if !ok {
		return -1
	}
	if b, ok := o.info.Uses[id].(*types.Builtin); !ok || b.Name() != "make" {
		return -1
	}
	switch len(call.Args) {
	case 1:
		return 1
	case 2:
		if tv, ok := o.info.Types[call.Args[1]]; ok && tv.Value != nil {
			if n, ok := constant.Int64Val(constant.ToInt(tv.Value)); ok && n == 0 {
				return 1
			}
		}
	}
	return 0
}

func (o *chanOrigins) varUnbuffered(v *types.Var) bool {
	if m, ok := o.memo[v]; ok {
		return m == 1 // a cycle in progress counts as no
	}
	o.memo[v] = 0
	ok := o.follow(v)
	if ok {
		o.memo[v] = 1
	}
	return ok
}

func (o *chanOrigins) follow(v *types.Var) bool {
	if v.Pkg() != o.pkg || o.unknown[v] || v.Exported() {
		return false // others may store a buffered channel
	}
	switch v.Kind() {
	case types.ParamVar:
		if !o.fed[v] {
			return false
		}
	case types.RecvVar, types.ResultVar:
		return false
	}
	made := false
	for _, s := range o.stores[v] {
		s = ast.Unparen(s)
		if id, ok := s.(*ast.Ident); ok && o.info.Types[id].IsNil() {
			continue // a nil channel disables a case; it holds nothing
		}
		if call, ok := s.(*ast.CallExpr); ok {
			switch o.madeUnbuffered(call) {
			case 1:
				made = true
				continue
			case 0:
				return false
			}
			// A conversion such as (chan<- error)(errc) keeps the channel.
			if tv, ok := o.info.Types[call.Fun]; ok && tv.IsType() && len(call.Args) == 1 {
				s = ast.Unparen(call.Args[0])
			}
		}
		w, ok := objectOf(o.info, s).(*types.Var)
		if !ok || !o.varUnbuffered(w) {
			return false
		}
		made = true
	}
	return made
}
