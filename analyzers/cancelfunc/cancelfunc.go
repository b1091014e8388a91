// Package cancelfunc defines an analyzer that reports cancel funcs of
// derived contexts that are not called.
//
// # Analyzer cancelfunc
//
// cancelfunc: report cancel funcs of context.WithCancel, WithTimeout, WithDeadline, signal.NotifyContext and their wrappers that are not called on some path
//
// A derived context holds resources until its cancel func runs: it stays
// registered in its parent's list of children, WithTimeout and WithDeadline
// keep a timer, and signal.NotifyContext keeps the signal captured. When
// the parent is a server's base context, nothing is ever released: every
// request that forgot to cancel adds a context and a timer that live as
// long as the process, and memory grows until the pod is killed. A handler
// such as
//
//	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
//	if err := auth(ctx, r); err != nil {
//		return // reported: cancel is not called on this path
//	}
//	defer cancel()
//
// should defer the call right after creating the context:
//
//	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
//	defer cancel()
//
// When the func is handed to other code on another path (a field, a
// call, a goroutine, the caller), deferring it would cut that code short,
// so the finding asks for a call before the return that lacks one:
//
//	cancel is not called on the path through this return: call cancel() before this return
//
// Reported: a cancel func (also of the Cause variants, of NotifyContext,
// and of same-package functions that return one they created) that is
// assigned to _, only copied to variables that are never called, only
// printed, stored in a struct field or map that nothing in the package
// calls, overwritten before it is called, not called on a path to a return
// or to the next loop iteration, or deferred inside a loop that has no
// known end (a range over a channel or an iterator, a for without a
// condition, or any loop around those). Not reported: a cancel func that
// is called or deferred on every path, returned, passed to a function
// (t.Cleanup, context.AfterFunc, a helper), sent on a channel, appended to
// a slice, stored in a field that some code calls, exported fields, or
// captured by a closure that is itself called, deferred or handed on; a
// defer in a loop over a slice, map, string or count, which holds at most
// one context per element until the function returns; a defer in a loop
// whose context is handed to a goroutine or used after the iteration,
// which must outlive the iteration.
package cancelfunc

import (
	"go/ast"
	"go/token"
	"go/types"
	"slices"
	"sort"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/passes/ctrlflow"
	"golang.org/x/tools/go/analysis/passes/inspect"
	"golang.org/x/tools/go/ast/inspector"
	"golang.org/x/tools/go/types/typeutil"

	"github.com/herald-hub/herald/analyzers/internal/report"
)

// Analyzer reports cancel funcs that are not called.
var Analyzer = &analysis.Analyzer{
	Name:     "cancelfunc",
	Doc:      "report cancel funcs of context.WithCancel, WithTimeout, WithDeadline, signal.NotifyContext and their wrappers that are not called on some path",
	URL:      "https://github.com/herald-hub/herald/blob/main/docs/leakvet/cancelfunc.md",
	Requires: []*analysis.Analyzer{inspect.Analyzer, ctrlflow.Analyzer},
	Run:      run,
}

// A source is a function whose results include cancel funcs.
type source struct {
	name  string       // as a reader knows it: "context.WithTimeout", "withBudget"
	slots map[int]bool // indexes of the results that must be called
	verb  string       // what the func is called in the docs: "cancel" or "stop"
	cost  string       // what stays alive until it is called
}

const (
	costCancel = "its context stays attached to the parent until the parent is canceled"
	costTimer  = "its timer and context live until the deadline"
	costSignal = "the signal stays captured and the context lives until one arrives"
)

// stdCosts lists the standard library's sources by package and name.
var stdCosts = map[string]map[string]string{
	"context": {
		"WithCancel":        costCancel,
		"WithCancelCause":   costCancel,
		"WithTimeout":       costTimer,
		"WithTimeoutCause":  costTimer,
		"WithDeadline":      costTimer,
		"WithDeadlineCause": costTimer,
	},
	"os/signal": {"NotifyContext": costSignal},
}

type checker struct {
	pass     *analysis.Pass
	info     *types.Info
	rep      *report.Reporter
	cfgs     *ctrlflow.CFGs
	calls    []*ast.CallExpr
	parent   map[ast.Node]ast.Node
	defs     map[types.Object]*ast.Ident
	refs     map[types.Object][]*ast.Ident // uses of each variable, in source order
	decls    map[*types.Func]*ast.FuncDecl
	wrappers map[*types.Func]*source
	fields   map[types.Object]bool // memo of fieldCalled
	reported map[token.Pos]bool
}

func run(pass *analysis.Pass) (any, error) {
	c := &checker{
		pass:     pass,
		info:     pass.TypesInfo,
		rep:      report.New(pass),
		cfgs:     pass.ResultOf[ctrlflow.Analyzer].(*ctrlflow.CFGs),
		parent:   make(map[ast.Node]ast.Node),
		defs:     make(map[types.Object]*ast.Ident),
		refs:     make(map[types.Object][]*ast.Ident),
		decls:    make(map[*types.Func]*ast.FuncDecl),
		wrappers: make(map[*types.Func]*source),
		fields:   make(map[types.Object]bool),
		reported: make(map[token.Pos]bool),
	}
	ins := pass.ResultOf[inspect.Analyzer].(*inspector.Inspector)
	ins.Preorder([]ast.Node{(*ast.CallExpr)(nil)}, func(n ast.Node) {
		c.calls = append(c.calls, n.(*ast.CallExpr))
	})
	if !c.reachesSources() {
		return nil, nil
	}
	c.index()
	c.findWrappers()
	for _, call := range c.calls {
		if src := c.sourceOf(call); src != nil {
			c.creation(call, src)
		}
	}
	return nil, nil
}

// reachesSources reports whether the package can call a source at all.
func (c *checker) reachesSources() bool {
	seen := map[*types.Package]bool{}
	var find func(p *types.Package) bool
	find = func(p *types.Package) bool {
		if seen[p] {
			return false
		}
		seen[p] = true
		if stdCosts[p.Path()] != nil {
			return true
		}
		return slices.ContainsFunc(p.Imports(), find)
	}
	return find(c.pass.Pkg)
}

// index records parents, definitions, uses and function declarations.
func (c *checker) index() {
	for _, f := range c.pass.Files {
		var stack []ast.Node
		ast.Inspect(f, func(n ast.Node) bool {
			if n == nil {
				stack = stack[:len(stack)-1]
				return true
			}
			if len(stack) > 0 {
				c.parent[n] = stack[len(stack)-1]
			}
			stack = append(stack, n)
			if d, ok := n.(*ast.FuncDecl); ok && d.Body != nil {
				if fn, ok := c.info.Defs[d.Name].(*types.Func); ok {
					c.decls[fn] = d
				}
			}
			return true
		})
	}
	for id, obj := range c.info.Defs {
		if v, ok := obj.(*types.Var); ok {
			c.defs[v] = id
		}
	}
	for id, obj := range c.info.Uses {
		if v, ok := obj.(*types.Var); ok {
			c.refs[v.Origin()] = append(c.refs[v.Origin()], id)
		}
	}
	for _, ids := range c.refs {
		sort.Slice(ids, func(i, j int) bool { return ids[i].Pos() < ids[j].Pos() })
	}
}

// sourceOf returns the source that call calls, if any.
func (c *checker) sourceOf(call *ast.CallExpr) *source {
	fn := typeutil.StaticCallee(c.info, call)
	if fn == nil {
		return nil
	}
	fn = fn.Origin()
	if src := c.wrappers[fn]; src != nil {
		return src
	}
	if fn.Pkg() == nil || fn.Signature().Recv() != nil {
		return nil
	}
	cost, ok := stdCosts[fn.Pkg().Path()][fn.Name()]
	if !ok {
		return nil
	}
	verb := "cancel"
	if fn.Name() == "NotifyContext" {
		verb = "stop"
	}
	return &source{name: fn.Pkg().Name() + "." + fn.Name(), slots: map[int]bool{1: true}, verb: verb, cost: cost}
}

// findWrappers finds the package's functions that return a cancel func
// they got from a source, until no more are found.
func (c *checker) findWrappers() {
	for changed := true; changed; {
		changed = false
		holders := c.holders()
		for fn, decl := range c.decls {
			results := fn.Signature().Results()
			mark := func(i int, inner *source) {
				if i >= results.Len() || !isFunc(results.At(i).Type()) {
					return
				}
				w := c.wrappers[fn]
				if w == nil {
					w = &source{name: wrapperName(decl), slots: map[int]bool{}, verb: inner.verb, cost: inner.cost}
					c.wrappers[fn] = w
				}
				if !w.slots[i] {
					w.slots[i] = true
					changed = true
				}
			}
			c.returns(decl.Body, func(ret *ast.ReturnStmt) {
				switch {
				case len(ret.Results) == 0:
					for i := range results.Len() {
						if src := holders[results.At(i)]; src != nil {
							mark(i, src)
						}
					}
				case len(ret.Results) == 1 && results.Len() > 1:
					if call, ok := ast.Unparen(ret.Results[0]).(*ast.CallExpr); ok {
						if src := c.sourceOf(call); src != nil {
							for i := range src.slots {
								mark(i, src)
							}
						}
					}
				case len(ret.Results) == results.Len():
					for i, r := range ret.Results {
						if src := c.carried(ast.Unparen(r), holders); src != nil {
							mark(i, src)
						}
					}
				}
			})
		}
	}
}

// holders maps the variables assigned a cancel func by a source call to
// that source.
func (c *checker) holders() map[types.Object]*source {
	h := make(map[types.Object]*source)
	for _, call := range c.calls {
		src := c.sourceOf(call)
		if src == nil {
			continue
		}
		for _, t := range c.targets(call, src) {
			if id, ok := t.(*ast.Ident); ok {
				if obj := c.objOf(id); obj != nil {
					h[obj] = src
				}
			}
		}
	}
	return h
}

// carried returns the source of the cancel func that the returned
// expression e hands to the caller: a holder, a single-result source call,
// or a closure that calls a holder.
func (c *checker) carried(e ast.Expr, holders map[types.Object]*source) *source {
	switch e := e.(type) {
	case *ast.Ident:
		return holders[c.info.Uses[e]]
	case *ast.CallExpr:
		if src := c.sourceOf(e); src != nil && src.slots[0] {
			return src
		}
	case *ast.FuncLit:
		var found *source
		ast.Inspect(e.Body, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok && found == nil {
				if id, ok := ast.Unparen(call.Fun).(*ast.Ident); ok {
					found = holders[c.info.Uses[id]]
				}
			}
			return found == nil
		})
		return found
	}
	return nil
}

// returns calls f for each return statement of body, not those of the
// function literals inside it.
func (c *checker) returns(body *ast.BlockStmt, f func(*ast.ReturnStmt)) {
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.ReturnStmt:
			f(n)
		}
		return true
	})
}

func wrapperName(d *ast.FuncDecl) string {
	if d.Recv == nil || len(d.Recv.List) == 0 {
		return d.Name.Name
	}
	t := d.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok {
		t = ix.X
	}
	if ix, ok := t.(*ast.IndexListExpr); ok {
		t = ix.X
	}
	return types.ExprString(t) + "." + d.Name.Name
}

func isFunc(t types.Type) bool {
	_, ok := t.Underlying().(*types.Signature)
	return ok
}

// targets returns the expressions that receive the cancel funcs of the
// source call, when its results are assigned or declared.
func (c *checker) targets(call *ast.CallExpr, src *source) []ast.Expr {
	var lhs []ast.Expr
	switch p := c.up(call).(type) {
	case *ast.AssignStmt:
		if len(p.Rhs) == 1 {
			lhs = p.Lhs
		}
	case *ast.ValueSpec:
		if len(p.Values) == 1 {
			for _, n := range p.Names {
				lhs = append(lhs, n)
			}
		}
	}
	if len(lhs) == 1 && !src.slots[0] || len(lhs) > 1 && len(lhs) != c.arity(call) {
		return nil
	}
	var out []ast.Expr
	for i, l := range lhs {
		if src.slots[i] {
			out = append(out, ast.Unparen(l))
		}
	}
	return out
}

func (c *checker) arity(call *ast.CallExpr) int {
	if t, ok := c.info.TypeOf(call).(*types.Tuple); ok {
		return t.Len()
	}
	return 1
}

// up returns the parent of e, skipping parentheses around e.
func (c *checker) up(e ast.Node) ast.Node {
	p := c.parent[e]
	for {
		if pe, ok := p.(*ast.ParenExpr); ok {
			p = c.parent[pe]
			continue
		}
		return p
	}
}

// outer returns e with the parentheses around it.
func (c *checker) outer(e ast.Expr) ast.Expr {
	for {
		pe, ok := c.parent[e].(*ast.ParenExpr)
		if !ok {
			return e
		}
		e = pe
	}
}

func (c *checker) objOf(id *ast.Ident) types.Object {
	if obj, ok := c.info.Defs[id].(*types.Var); ok {
		return obj
	}
	if obj, ok := c.info.Uses[id].(*types.Var); ok {
		return obj.Origin()
	}
	return nil
}

// funcOf returns the innermost function declaration or literal around n,
// or nil at package level.
func (c *checker) funcOf(n ast.Node) ast.Node {
	for p := c.parent[n]; p != nil; p = c.parent[p] {
		switch p.(type) {
		case *ast.FuncDecl, *ast.FuncLit:
			return p
		}
	}
	return nil
}

func (c *checker) report(n ast.Node, msg string) {
	if c.reported[n.Pos()] {
		return
	}
	c.reported[n.Pos()] = true
	c.rep.Report(n, msg)
}
