// Package goblock defines an analyzer that reports goroutines, and
// streaming handler loops, that can block or run forever.
//
// # Analyzer goblock
//
// goblock: report goroutines and handler loops that can block or run forever
//
// A goroutine that is never going to end holds its stack and everything
// it references, and a server starts one per request: memory and
// goroutine counts climb until the process is restarted. The commonest
// shape is a result sent on an unbuffered channel to a caller that has
// stopped waiting:
//
//	ch := make(chan result)
//	go func() { ch <- fetch(ctx) }() // reported
//	select {
//	case r := <-ch:
//		return r.v, r.err
//	case <-ctx.Done():
//		return nil, ctx.Err() // the send above now blocks forever
//	}
//
// A buffer of one lets the goroutine finish whether anyone receives:
//
//	ch := make(chan result, 1)
//
// The others are loops with no way out: a range over a channel nothing
// closes, a for-select with no ctx.Done() or done-channel case, and a
// loop that sleeps or writes forever while ignoring its context and its
// write errors, such as a server-sent-events handler that never watches
// r.Context().
//
// Reported, at the go statement: a goroutine (a func literal or a
// function of the package) that sends on a local unbuffered channel
// which its caller may stop receiving from, on some path to a return or
// by leaving its receiving loop early; and a goroutine whose loop has no
// exit at all. Reported at the loop: a loop with no exit in an HTTP
// handler. A buffer is suggested, and -fix adds one, only for a
// goroutine that sends once; one that sends in a loop is told to select
// on ctx.Done() or a done channel instead.
//
// Not reported: a buffered result channel; a send inside a select; a
// caller that receives on every path, counting a counted receive loop
// run to its end as receiving; a channel the goroutine, or another
// goroutine, also receives on; a range over a channel closed anywhere
// in the package; loops with any return or break (on ctx.Done(), a done
// channel or a write error); server-lifetime work: goroutines started
// in main or init, in a function that only main, init or such functions
// call (directly, not from a func literal such as a handler), in
// sync.Once.Do, or after an early return on a package-level variable
// the function then sets (a lazily started singleton); and channels
// that reach code the package does not show.
package goblock

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/passes/ctrlflow"
	"golang.org/x/tools/go/analysis/passes/inspect"
	"golang.org/x/tools/go/ast/inspector"
	"golang.org/x/tools/go/cfg"
	"golang.org/x/tools/go/types/typeutil"

	"github.com/herald-hub/herald/analyzers/internal/astx"
	"github.com/herald-hub/herald/analyzers/internal/report"
)

// Analyzer reports goroutines and handler loops that can block or run
// forever.
var Analyzer = &analysis.Analyzer{
	Name:     "goblock",
	Doc:      "report goroutines and handler loops that can block or run forever (abandoned sends, unclosed ranges, loops with no exit)",
	URL:      "https://github.com/herald-hub/herald/blob/main/docs/leakvet/goblock.md",
	Requires: []*analysis.Analyzer{inspect.Analyzer, ctrlflow.Analyzer},
	Run:      run,
}

const (
	msgSend      = "goroutine leak: the send on unbuffered %s blocks forever once the caller returns without receiving; make %s buffered (make(chan %s, 1)) or select on ctx.Done() in the send"
	msgSendLoop  = "goroutine leak: goroutines started in a loop block forever sending on unbuffered %s once the receiver stops early; buffer %s for every sender (make(chan %s, n)) or select on ctx.Done() in the send"
	msgSendMany  = "goroutine leak: the goroutine's loop sends on unbuffered %s and blocks forever once the caller stops receiving; select in the send on ctx.Done() or on a done channel the caller closes when it returns"
	msgRange     = "goroutine leak: the goroutine ranges over %s, which nothing closes, so it never ends; close %s when the producer is done, or select on a done channel"
	msgTicker    = "goroutine leak: the goroutine ranges over a ticker with no way out, so it never ends; select on the ticker and on ctx.Done() (or a done channel), and return"
	msgSelect    = "goroutine leak: the goroutine's for-select loop has no case that ends it (no ctx.Done(), done or closed channel), so it never ends; add a case <-ctx.Done(): return"
	msgSleep     = "goroutine leak: the goroutine's loop sleeps and repeats with no exit, so it never ends; wait in a select on ctx.Done() (return) and a timer instead of time.Sleep"
	msgWrite     = "goroutine leak: the goroutine's loop writes with no exit, ignoring write errors and the context, so it never ends; return on a write error and on ctx.Done()"
	msgLoop      = "goroutine leak: the goroutine's loop has no exit, so it never ends; return on ctx.Done() or on a done channel"
	msgHandler   = "request leak: this handler loop has no exit, so it runs on after the client has gone; select on %s.Context().Done() and return, and return on a write error"
	msgFixBuffer = "make %s buffered"
)

type checker struct {
	pass  *analysis.Pass
	rep   *report.Reporter
	chans *chans
	cfgs  *ctrlflow.CFGs
	// startup are the functions that run only while the program starts.
	startup map[*types.Func]bool
}

func run(pass *analysis.Pass) (any, error) {
	c := &checker{
		pass:  pass,
		rep:   report.New(pass),
		chans: newChans(pass),
		cfgs:  pass.ResultOf[ctrlflow.Analyzer].(*ctrlflow.CFGs),
	}
	c.startup = c.startupFuncs()
	ins := pass.ResultOf[inspect.Analyzer].(*inspector.Inspector)
	filter := []ast.Node{(*ast.GoStmt)(nil), (*ast.FuncDecl)(nil), (*ast.FuncLit)(nil)}
	ins.WithStack(filter, func(n ast.Node, push bool, stack []ast.Node) bool {
		if !push {
			return true
		}
		switch n := n.(type) {
		case *ast.GoStmt:
			c.goStmt(n, stack)
		case *ast.FuncDecl:
			if n.Body != nil {
				c.handler(n.Type, n.Body)
			}
		case *ast.FuncLit:
			c.handler(n.Type, n.Body)
		}
		return true
	})
	return nil, nil
}

// goroutine is the code a go statement runs.
type goroutine struct {
	body   *ast.BlockStmt
	params *types.Tuple
	args   []ast.Expr
}

func (c *checker) goStmt(g *ast.GoStmt, stack []ast.Node) {
	fi := enclosingFunc(stack)
	if fi < 0 {
		return
	}
	fn := stack[fi]
	if fd, ok := fn.(*ast.FuncDecl); ok {
		if obj, _ := c.pass.TypesInfo.Defs[fd.Name].(*types.Func); c.startup[obj] {
			return // started by main or init: lives as long as the program
		}
		if c.guardedOnce(fd.Body, g.Pos()) {
			return // a lazily started singleton
		}
	}
	inLoop := false
	for _, n := range stack[fi+1:] {
		switch n.(type) {
		case *ast.ForStmt, *ast.RangeStmt:
			inLoop = true
		}
	}
	if fi > 0 && c.onceDo(stack[fi-1]) {
		return // started once, for the life of the program
	}
	gr := c.target(g.Call)
	if gr == nil {
		return
	}
	if c.blockedSend(g, fn, gr, inLoop) {
		return
	}
	c.endlessGoroutine(g, gr)
}

// onceDo reports whether n is a call of sync.Once's Do.
func (c *checker) onceDo(n ast.Node) bool {
	call, ok := n.(*ast.CallExpr)
	if !ok {
		return false
	}
	fn := typeutil.StaticCallee(c.pass.TypesInfo, call)
	return fn != nil && fn.Name() == "Do" && fn.Pkg() != nil && fn.Pkg().Path() == "sync"
}

// target returns the code that call runs when it is the function of
// the package or the func literal it names, or nil.
func (c *checker) target(call *ast.CallExpr) *goroutine {
	info := c.pass.TypesInfo
	if lit, ok := ast.Unparen(call.Fun).(*ast.FuncLit); ok {
		return &goroutine{body: lit.Body, params: lit2params(info, lit), args: call.Args}
	}
	fn := typeutil.StaticCallee(info, call)
	if fn == nil {
		return nil
	}
	decl := c.chans.decls[fn.Origin()]
	if decl == nil || decl.Body == nil {
		return nil
	}
	return &goroutine{body: decl.Body, params: fn.Origin().Signature().Params(), args: call.Args}
}

// blockedSend reports the goroutine g when it sends on a local
// unbuffered channel that the function fn starting it may stop receiving
// from. It says whether it reported.
func (c *checker) blockedSend(g *ast.GoStmt, fn ast.Node, gr *goroutine, inLoop bool) bool {
	body := astx.FuncBody(fn)
	var order []types.Object
	sends := make(map[types.Object]int)
	received := make(map[types.Object]bool) // by the goroutine itself
	looped := make(map[types.Object]bool)   // sent on in a loop
	// local returns the caller's local channel that e denotes, or nil.
	local := func(e ast.Expr) types.Object {
		o := c.chans.object(e)
		if o == nil {
			return nil
		}
		for i := range gr.params.Len() {
			if gr.params.At(i) == o {
				o = nil
				if i < len(gr.args) {
					o = c.chans.object(gr.args[i])
				}
				break
			}
		}
		if o == nil || o.Pos() < body.Lbrace || o.Pos() > body.Rbrace {
			return nil // not a local channel of the caller
		}
		return o
	}
	inspectShallow(gr.body, func(n ast.Node, stack []ast.Node) {
		switch n := n.(type) {
		case *ast.UnaryExpr:
			if n.Op == token.ARROW {
				if o := local(n.X); o != nil {
					received[o] = true
				}
			}
		case *ast.RangeStmt:
			if o := local(n.X); o != nil {
				received[o] = true
			}
		}
		s, ok := n.(*ast.SendStmt)
		if !ok {
			return
		}
		if len(stack) > 0 {
			if _, isComm := stack[len(stack)-1].(*ast.CommClause); isComm {
				return // a send in a select may have a way out
			}
		}
		o := local(s.Chan)
		if o == nil {
			return
		}
		if sends[o] == 0 {
			order = append(order, o)
		}
		sends[o]++
		for _, p := range stack {
			switch p.(type) {
			case *ast.ForStmt, *ast.RangeStmt:
				looped[o] = true
			}
		}
	})
	for _, o := range order {
		mk := c.chans.makes[o]
		if mk == nil || c.chans.makeCap[o] != 0 || c.chans.assigns[o] != 1 || !c.chans.followed(o) {
			continue
		}
		if received[o] {
			continue // goroutines that talk to each other
		}
		recvs, multi, ok := c.callerUses(g, body, o)
		if !ok {
			continue
		}
		multi = multi || inLoop
		leak, recvLoop := false, false
		for _, r := range recvs {
			loop, label := enclosingLoop(r, g)
			recvLoop = recvLoop || loop != nil
			if multi && loop != nil && c.earlyExit(loop, label, o) {
				leak = true
			}
		}
		// Several senders and a receiving loop: a path that skips the
		// loop is one that started no sender either.
		if !leak && !(multi && recvLoop) {
			leak = c.exitWithoutReceive(fn, g, o)
		}
		if !leak {
			continue
		}
		name := o.Name()
		elem := types.TypeString(elemOf(o.Type()), types.RelativeTo(c.pass.Pkg))
		if looped[o] {
			// No buffer fits a goroutine that keeps sending.
			c.rep.ReportRange(g.Pos(), g.Call.Lparen, fmt.Sprintf(msgSendMany, name))
			return true
		}
		if multi {
			c.rep.ReportRange(g.Pos(), g.Call.Lparen, fmt.Sprintf(msgSendLoop, name, name, elem))
			return true
		}
		var fixes []analysis.SuggestedFix
		if len(mk.Args) == 1 && sends[o] == 1 {
			fixes = append(fixes, analysis.SuggestedFix{
				Message:   fmt.Sprintf(msgFixBuffer, name),
				TextEdits: []analysis.TextEdit{{Pos: mk.Rparen, End: mk.Rparen, NewText: []byte(", 1")}},
			})
		}
		c.rep.ReportRange(g.Pos(), g.Call.Lparen, fmt.Sprintf(msgSend, name, name, elem), fixes...)
		return true
	}
	return false
}

// callerUses checks the uses of the channel o in body, the function
// that starts g, outside g. It returns the receives (each with the path
// from body down to it), whether other goroutines send on o too, and
// false when a use is one this analysis cannot follow.
func (c *checker) callerUses(g *ast.GoStmt, body *ast.BlockStmt, o types.Object) (recvs [][]ast.Node, multi, ok bool) {
	info := c.pass.TypesInfo
	ok = true
	var stack []ast.Node
	ast.Inspect(body, func(n ast.Node) bool {
		if !ok {
			return false
		}
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		if n == g {
			return false
		}
		id, isID := n.(*ast.Ident)
		if !isID || info.Uses[id] != o {
			stack = append(stack, n)
			return true
		}
		parent := stack[len(stack)-1]
		// Inside another goroutine: a sender or a closer is fine.
		inGo, inLit := false, false
		for i := len(stack) - 1; i >= 0; i-- {
			switch stack[i].(type) {
			case *ast.GoStmt:
				inGo = true
			case *ast.FuncLit:
				inLit = true
			}
		}
		switch p := parent.(type) {
		case *ast.SendStmt:
			if p.Chan == id && inGo {
				multi = true
				return false
			}
		case *ast.CallExpr:
			if isBuiltin(info, p, "close") || (isBuiltin(info, p, "len") || isBuiltin(info, p, "cap")) && !inLit {
				return false
			}
		case *ast.UnaryExpr:
			if p.Op == token.ARROW && !inLit {
				recvs = append(recvs, append(append([]ast.Node(nil), stack...), id))
				return false
			}
		case *ast.RangeStmt:
			if p.X == id && !inLit {
				recvs = append(recvs, append(append([]ast.Node(nil), stack...), id))
				return false
			}
		}
		ok = false
		return false
	})
	return recvs, multi, ok
}

// exitWithoutReceive reports whether some path of fn from g to a return
// passes no use of the channel o. Leaving a loop whose body uses o by its
// condition counts as a use: a counted receive loop paired with a counted
// send loop, which skips no receive its sender needs.
func (c *checker) exitWithoutReceive(fn ast.Node, g *ast.GoStmt, o types.Object) bool {
	var graph *cfg.CFG
	switch fn := fn.(type) {
	case *ast.FuncDecl:
		graph = c.cfgs.FuncDecl(fn)
	case *ast.FuncLit:
		graph = c.cfgs.FuncLit(fn)
	}
	if graph == nil {
		return false
	}
	info := c.pass.TypesInfo
	refs := func(n ast.Node) bool {
		found := false
		ast.Inspect(n, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && info.Uses[id] == o {
				found = true
			}
			return !found
		})
		return found
	}
	comms := make(map[ast.Node]bool)
	ast.Inspect(astx.FuncBody(fn), func(n ast.Node) bool {
		if cc, ok := n.(*ast.CommClause); ok && cc.Comm != nil {
			comms[cc.Comm] = true
		}
		return true
	})
	// recvLoops are the loops, not around g, whose body uses o.
	recvLoops := make(map[ast.Stmt]bool)
	ast.Inspect(astx.FuncBody(fn), func(n ast.Node) bool {
		switch n.(type) {
		case *ast.ForStmt, *ast.RangeStmt:
			loop := n.(ast.Stmt)
			if !(g.Pos() >= loop.Pos() && g.End() <= loop.End()) && refs(astx.LoopBody(loop)) {
				recvLoops[loop] = true
			}
		}
		return true
	})
	seen := make(map[*cfg.Block]bool)
	var walk func(b *cfg.Block, from int) bool
	walk = func(b *cfg.Block, from int) bool {
		if b.Kind == cfg.KindSelectCaseBody && from == 0 {
			if cc, ok := b.Stmt.(*ast.CommClause); ok && cc.Comm != nil && refs(cc.Comm) {
				return false
			}
		}
		for _, n := range b.Nodes[from:] {
			if !comms[n] && refs(n) {
				return false
			}
		}
		if b.Return() != nil {
			return true
		}
		for _, s := range b.Succs {
			if (s.Kind == cfg.KindForDone || s.Kind == cfg.KindRangeDone) &&
				(b.Kind == cfg.KindForLoop || b.Kind == cfg.KindRangeLoop) &&
				s.Stmt == b.Stmt && recvLoops[s.Stmt] {
				continue // the loop ran its course, receiving
			}
			if !seen[s] {
				seen[s] = true
				if walk(s, 0) {
					return true
				}
			}
		}
		return false
	}
	for _, b := range graph.Blocks {
		for i, n := range b.Nodes {
			if n == g {
				return b.Live && walk(b, i+1)
			}
		}
	}
	return false
}

// enclosingLoop returns the innermost loop on path (a path from a
// function body down to a receive) that does not contain g.
func enclosingLoop(path []ast.Node, g *ast.GoStmt) (ast.Stmt, string) {
	for i := len(path) - 1; i >= 0; i-- {
		switch l := path[i].(type) {
		case *ast.ForStmt, *ast.RangeStmt:
			if g.Pos() >= l.Pos() && g.End() <= l.End() {
				return nil, ""
			}
			return l.(ast.Stmt), labelOf(path[:i])
		}
	}
	return nil, ""
}

// earlyExit reports whether the receiving loop can be left while senders
// on o are still waiting: a way out on an error, or from a select case
// other than the receive.
func (c *checker) earlyExit(loop ast.Stmt, label string, o types.Object) bool {
	info := c.pass.TypesInfo
	for _, path := range c.exits(loop, label) {
		for _, n := range path {
			switch n := n.(type) {
			case *ast.IfStmt:
				if mentionsError(info, n.Cond) {
					return true
				}
			case *ast.CommClause:
				if n.Comm == nil {
					return true
				}
				refs := false
				ast.Inspect(n.Comm, func(x ast.Node) bool {
					if id, ok := x.(*ast.Ident); ok && info.Uses[id] == o {
						refs = true
					}
					return !refs
				})
				if !refs {
					return true
				}
			}
		}
	}
	return false
}

func mentionsError(info *types.Info, e ast.Expr) bool {
	errType := types.Universe.Lookup("error").Type()
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if x, ok := n.(ast.Expr); ok && !found {
			if t := info.TypeOf(x); t != nil && types.Identical(t, errType) && !info.Types[x].IsNil() {
				found = true
			}
		}
		return !found
	})
	return found
}

// endlessGoroutine reports g when the code it runs, or a function of the
// package that code calls, has a loop with no exit.
func (c *checker) endlessGoroutine(g *ast.GoStmt, gr *goroutine) {
	bodies := []*ast.BlockStmt{gr.body}
	inspectShallow(gr.body, func(n ast.Node, stack []ast.Node) {
		es, ok := n.(*ast.ExprStmt)
		if !ok {
			return
		}
		call, ok := es.X.(*ast.CallExpr)
		if !ok {
			return
		}
		if fn := typeutil.StaticCallee(c.pass.TypesInfo, call); fn != nil {
			if d := c.chans.decls[fn.Origin()]; d != nil && d.Body != nil && d.Body != gr.body {
				bodies = append(bodies, d.Body)
			}
		}
	})
	for _, body := range bodies {
		if msg := c.endlessIn(body); msg != "" {
			c.rep.ReportRange(g.Pos(), g.Call.Lparen, msg)
			return
		}
	}
}

// endlessIn returns the finding for the first loop with no exit in body,
// or "".
func (c *checker) endlessIn(body *ast.BlockStmt) string {
	msg := ""
	inspectShallow(body, func(n ast.Node, stack []ast.Node) {
		if msg != "" {
			return
		}
		loop, ok := n.(ast.Stmt)
		if !ok || !c.endless(loop, stack) {
			return
		}
		msg = c.describe(loop)
	})
	return msg
}

func (c *checker) describe(loop ast.Stmt) string {
	info := c.pass.TypesInfo
	if r, ok := loop.(*ast.RangeStmt); ok {
		if c.chans.neverClosed(r.X) {
			name := types.ExprString(r.X)
			return fmt.Sprintf(msgRange, name, name)
		}
		return msgTicker
	}
	hasSelect, sleeps, writes := false, false, false
	inspectShallow(loop.(*ast.ForStmt).Body, func(n ast.Node, _ []ast.Node) {
		switch n := n.(type) {
		case *ast.SelectStmt:
			hasSelect = true
		case *ast.CallExpr:
			fn, ok := typeutil.Callee(info, n).(*types.Func)
			if !ok {
				return
			}
			switch {
			case fn.Pkg() != nil && fn.Pkg().Path() == "time" && fn.Name() == "Sleep":
				sleeps = true
			case isWrite(fn):
				writes = true
			}
		}
	})
	switch {
	case hasSelect:
		return msgSelect
	case writes:
		return msgWrite
	case sleeps:
		return msgSleep
	}
	return msgLoop
}

func isWrite(fn *types.Func) bool {
	if fn.Signature().Recv() != nil {
		switch fn.Name() {
		case "Write", "WriteString", "Flush", "Encode":
			return true
		}
		return false
	}
	if fn.Pkg() == nil {
		return false
	}
	switch fn.Pkg().Path() + "." + fn.Name() {
	case "fmt.Fprint", "fmt.Fprintf", "fmt.Fprintln", "io.WriteString", "io.Copy":
		return true
	}
	return false
}

// endless reports whether s is a loop that nothing ends: a for with no
// condition, or a range over a channel that is never closed, with no
// statement that leaves it.
func (c *checker) endless(s ast.Stmt, stack []ast.Node) bool {
	switch s := s.(type) {
	case *ast.ForStmt:
		if s.Cond != nil && !isTrue(c.pass.TypesInfo, s.Cond) {
			return false
		}
	case *ast.RangeStmt:
		if !isChan(c.pass.TypesInfo.TypeOf(s.X)) || !c.neverEnds(s.X) {
			return false
		}
	default:
		return false
	}
	return len(c.exits(s, labelOf(stack))) == 0
}

// labelOf returns the label of the statement whose path is stack, or "".
func labelOf(stack []ast.Node) string {
	if len(stack) > 0 {
		if ls, ok := stack[len(stack)-1].(*ast.LabeledStmt); ok {
			return ls.Label.Name
		}
	}
	return ""
}

// neverEnds reports whether ranging over the channel e never ends.
func (c *checker) neverEnds(e ast.Expr) bool {
	info := c.pass.TypesInfo
	switch e := ast.Unparen(e).(type) {
	case *ast.CallExpr:
		fn, ok := typeutil.Callee(info, e).(*types.Func)
		return ok && fn.Pkg() != nil && fn.Pkg().Path() == "time" && (fn.Name() == "Tick" || fn.Name() == "After")
	case *ast.SelectorExpr:
		if v, ok := info.ObjectOf(e.Sel).(*types.Var); ok && v.IsField() && v.Pkg() != nil && v.Pkg().Path() == "time" && v.Name() == "C" {
			return true // the channel of a time.Ticker or time.Timer
		}
	}
	return c.chans.neverClosed(e)
}

// exits returns the statements that leave loop, each with its path from
// the loop down: returns, breaks, continues and gotos that go outside
// it, and calls that never return. label is the loop's own label.
func (c *checker) exits(loop ast.Stmt, label string) [][]ast.Node {
	body := astx.LoopBody(loop)
	inner := make(map[string]bool)
	ast.Inspect(body, func(n ast.Node) bool {
		if ls, ok := n.(*ast.LabeledStmt); ok {
			inner[ls.Label.Name] = true
		}
		_, lit := n.(*ast.FuncLit)
		return !lit
	})
	var out [][]ast.Node
	inspectShallow(body, func(n ast.Node, stack []ast.Node) {
		leaves := false
		switch n := n.(type) {
		case *ast.ReturnStmt:
			leaves = true
		case *ast.BranchStmt:
			switch {
			case n.Label != nil:
				leaves = !inner[n.Label.Name] && !(n.Tok == token.CONTINUE && n.Label.Name == label)
			case n.Tok == token.BREAK:
				leaves = !hasBreakable(stack)
			}
		case *ast.ExprStmt:
			if call, ok := n.X.(*ast.CallExpr); ok {
				leaves = c.noReturn(call)
			}
		}
		if leaves {
			out = append(out, append(append([]ast.Node(nil), stack...), n))
		}
	})
	return out
}

func hasBreakable(stack []ast.Node) bool {
	for _, n := range stack {
		switch n.(type) {
		case *ast.ForStmt, *ast.RangeStmt, *ast.SwitchStmt, *ast.TypeSwitchStmt, *ast.SelectStmt:
			return true
		}
	}
	return false
}

// noReturn reports whether call stops the goroutine or the program.
func (c *checker) noReturn(call *ast.CallExpr) bool {
	info := c.pass.TypesInfo
	if isBuiltin(info, call, "panic") {
		return true
	}
	fn := typeutil.StaticCallee(info, call)
	if fn == nil {
		return false
	}
	if c.cfgs.NoReturn(fn) {
		return true
	}
	switch fn.Name() {
	case "Exit", "Goexit", "FailNow", "SkipNow", "Skip", "Skipf", "Fatal", "Fatalf", "Fatalln", "Panic", "Panicf", "Panicln":
		return true
	}
	return false
}

// handler reports loops with no exit in the body of an HTTP handler.
func (c *checker) handler(ft *ast.FuncType, body *ast.BlockStmt) {
	req := requestParam(c.pass.TypesInfo, ft)
	if req == "" {
		return
	}
	var done []ast.Stmt
	inspectShallow(body, func(n ast.Node, stack []ast.Node) {
		loop, ok := n.(ast.Stmt)
		if !ok || !c.endless(loop, stack) {
			return
		}
		for _, d := range done {
			if loop.Pos() >= d.Pos() && loop.End() <= d.End() {
				return
			}
		}
		done = append(done, loop)
		c.rep.ReportRange(loop.Pos(), loopHead(loop), fmt.Sprintf(msgHandler, req))
	})
}

func loopHead(loop ast.Stmt) token.Pos {
	switch l := loop.(type) {
	case *ast.ForStmt:
		return l.Body.Lbrace
	case *ast.RangeStmt:
		return l.Body.Lbrace
	}
	return loop.End()
}

// requestParam returns the name of the *http.Request parameter of ft
// when ft is a handler's, taking an http.ResponseWriter too, or "".
func requestParam(info *types.Info, ft *ast.FuncType) string {
	writer := false
	for _, fl := range ft.Params.List {
		if named, ok := info.TypeOf(fl.Type).(*types.Named); ok && named.Obj().Pkg() != nil &&
			named.Obj().Pkg().Path() == "net/http" && named.Obj().Name() == "ResponseWriter" {
			writer = true
		}
	}
	if !writer {
		return ""
	}
	for _, fl := range ft.Params.List {
		ptr, ok := info.TypeOf(fl.Type).(*types.Pointer)
		if !ok {
			continue
		}
		named, ok := ptr.Elem().(*types.Named)
		if !ok || named.Obj().Pkg() == nil || named.Obj().Pkg().Path() != "net/http" || named.Obj().Name() != "Request" {
			continue
		}
		if len(fl.Names) > 0 && fl.Names[0].Name != "_" {
			return fl.Names[0].Name
		}
		return "r"
	}
	return ""
}

// inspectShallow calls f for every node under root, outside nested func
// literals, with the path from root (included) down to the node
// (excluded).
func inspectShallow(root ast.Node, f func(n ast.Node, stack []ast.Node)) {
	var stack []ast.Node
	ast.Inspect(root, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		if _, ok := n.(*ast.FuncLit); ok {
			return false
		}
		if n != root {
			f(n, stack)
		}
		stack = append(stack, n)
		return true
	})
}

func enclosingFunc(stack []ast.Node) int {
	for i := len(stack) - 1; i >= 0; i-- {
		switch stack[i].(type) {
		case *ast.FuncDecl, *ast.FuncLit:
			return i
		}
	}
	return -1
}

func isTrue(info *types.Info, e ast.Expr) bool {
	id, ok := ast.Unparen(e).(*ast.Ident)
	return ok && info.Uses[id] == types.Universe.Lookup("true")
}
