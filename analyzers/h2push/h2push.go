// Package h2push defines an analyzer that reports HTTP/2 server push.
//
// # Analyzer h2push
//
// h2push: report uses of HTTP/2 server push (http.Pusher, Push, http.PushOptions)
//
// Server push was meant to send a page's assets before the browser asked
// for them. Browsers have dropped it (Chrome ignores PUSH_PROMISE since
// version 106, Firefox since 132), so every pushed stream is wasted
// bandwidth, and a pushed response that the client refuses costs a stream
// reset on a connection that other requests share. Proxies and CDNs that
// do not forward pushes break connection reuse when they see one. A
// handler such as
//
//	if p, ok := w.(http.Pusher); ok {
//		p.Push("/app.js", nil) // reported
//	}
//
// should announce the asset instead, with a Link header that the browser
// acts on (103 Early Hints lets it act before the response is ready):
//
//	w.Header().Add("Link", "</app.js>; rel=preload; as=script")
//
// Reported, once per push: calls of http.Pusher's Push method (also
// through an interface that embeds it), Push taken as a method value, and
// http.PushOptions values built outside a reported call. Not reported: a
// Push method that only forwards push for a wrapped ResponseWriter, type
// assertions and switches that only probe for http.Pusher (a wrapper
// keeping the wrapped writer's interfaces pushes nothing), compile-time
// interface checks, and Push methods of other types.
package h2push

import (
	"go/ast"
	"go/types"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/passes/inspect"
	"golang.org/x/tools/go/ast/inspector"

	"github.com/herald-hub/herald/analyzers/internal/astx"
	"github.com/herald-hub/herald/analyzers/internal/report"
)

// Analyzer reports HTTP/2 server push.
var Analyzer = &analysis.Analyzer{
	Name:     "h2push",
	Doc:      "report uses of HTTP/2 server push (http.Pusher, Push, http.PushOptions), which browsers have dropped",
	URL:      "https://github.com/herald-hub/herald/blob/main/docs/leakvet/h2push.md",
	Requires: []*analysis.Analyzer{inspect.Analyzer},
	Run:      run,
}

const (
	msgPush    = "HTTP/2 server push: browsers ignore pushed streams and they cost connection reuse; replace Push with a Link rel=preload header (or 103 Early Hints)"
	msgOptions = "HTTP/2 server push options: browsers ignore pushed streams; replace the push with a Link rel=preload header (or 103 Early Hints)"
)

func run(pass *analysis.Pass) (any, error) {
	pusher := astx.LookupType(pass.Pkg, "net/http", "Pusher")
	options := astx.LookupType(pass.Pkg, "net/http", "PushOptions")
	if pusher == nil && options == nil {
		return nil, nil // the package does not reach net/http's push API
	}
	rep := report.New(pass)
	ins := pass.ResultOf[inspect.Analyzer].(*inspector.Inspector)
	// Options built as an argument of a reported Push are part of that
	// finding, not one of their own.
	inPush := make(map[ast.Node]bool)
	filter := []ast.Node{(*ast.CallExpr)(nil), (*ast.SelectorExpr)(nil), (*ast.CompositeLit)(nil)}
	ins.WithStack(filter, func(n ast.Node, push bool, stack []ast.Node) bool {
		if !push {
			return true
		}
		switch n := n.(type) {
		case *ast.CallExpr:
			sel, ok := ast.Unparen(n.Fun).(*ast.SelectorExpr)
			if !ok || !isPush(pass, sel, pusher) || passesOn(pass, n, forwarder(pass, stack, pusher)) {
				return true
			}
			rep.Report(n, msgPush)
			for _, a := range n.Args {
				a = ast.Unparen(a)
				if u, ok := a.(*ast.UnaryExpr); ok {
					a = ast.Unparen(u.X)
				}
				inPush[a] = true
			}
		case *ast.SelectorExpr:
			// A method value (p.Push handed on, not called here).
			if !isPush(pass, n, pusher) || len(stack) < 2 {
				return true
			}
			if call, ok := stack[len(stack)-2].(*ast.CallExpr); ok && ast.Unparen(call.Fun) == n {
				return true
			}
			rep.Report(n, msgPush)
		case *ast.CompositeLit:
			if t := pass.TypesInfo.TypeOf(n); t != nil && options != nil && types.Identical(t, options) && !inPush[n] {
				rep.Report(n, msgOptions)
			}
		}
		return true
	})
	return nil, nil
}

// isPush reports whether sel selects the Push method of http.Pusher (or
// of an interface that embeds it).
func isPush(pass *analysis.Pass, sel *ast.SelectorExpr, pusher types.Type) bool {
	if sel.Sel.Name != "Push" || pusher == nil {
		return false
	}
	fn, ok := pass.TypesInfo.Uses[sel.Sel].(*types.Func)
	if !ok {
		return false
	}
	recv := fn.Signature().Recv()
	return recv != nil && types.Identical(recv.Type(), pusher)
}

// forwarder returns the innermost enclosing method declaration when it is
// a Push method with http.Pusher's signature: a ResponseWriter wrapper
// keeping the wrapped writer's abilities, which is no use of push itself.
func forwarder(pass *analysis.Pass, stack []ast.Node, pusher types.Type) *ast.FuncDecl {
	if pusher == nil {
		return nil
	}
	for i := len(stack) - 1; i >= 0; i-- {
		switch n := stack[i].(type) {
		case *ast.FuncLit:
			return nil
		case *ast.FuncDecl:
			if n.Recv == nil || n.Name.Name != "Push" {
				return nil
			}
			fn, ok := pass.TypesInfo.Defs[n.Name].(*types.Func)
			if !ok {
				return nil
			}
			iface, ok := pusher.Underlying().(*types.Interface)
			if !ok || iface.NumMethods() != 1 || !types.Identical(fn.Signature().Params(), iface.Method(0).Signature().Params()) {
				return nil
			}
			return n
		}
	}
	return nil
}

// passesOn reports whether call, inside the forwarding method fd, hands
// fd's parameters on unchanged.
func passesOn(pass *analysis.Pass, call *ast.CallExpr, fd *ast.FuncDecl) bool {
	if fd == nil {
		return false
	}
	var params []types.Object
	for _, fl := range fd.Type.Params.List {
		for _, nm := range fl.Names {
			params = append(params, pass.TypesInfo.Defs[nm])
		}
	}
	if len(call.Args) != len(params) {
		return false
	}
	for i, a := range call.Args {
		id, ok := ast.Unparen(a).(*ast.Ident)
		if !ok || pass.TypesInfo.Uses[id] != params[i] {
			return false
		}
	}
	return true
}
