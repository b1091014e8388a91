package goblock

import (
	"go/ast"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/types/typeutil"

	"github.com/herald-hub/herald/analyzers/internal/astx"
)

// startupFuncs returns the functions of the package that run only while
// the program starts: main and init, and the functions whose every call
// is directly in the body of one of them (not in a func literal), or in
// a package-level variable's initializer. A goroutine they start lives
// as long as the program does.
func (c *checker) startupFuncs() map[*types.Func]bool {
	info := c.pass.TypesInfo
	startup := make(map[*types.Func]bool)
	// callers maps a function to the functions that call it; nil stands
	// for a package-level initializer, lit for a call in a func literal.
	lit := new(types.Func)
	callers := make(map[*types.Func][]*types.Func)
	for _, f := range c.pass.Files {
		for _, d := range f.Decls {
			var caller *types.Func
			if fd, ok := d.(*ast.FuncDecl); ok {
				caller, _ = info.Defs[fd.Name].(*types.Func)
				if caller == nil {
					continue
				}
				if fd.Recv == nil && (fd.Name.Name == "main" || fd.Name.Name == "init") {
					startup[caller] = true
				}
			}
			ast.Inspect(d, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.FuncLit:
					ast.Inspect(n.Body, func(n ast.Node) bool {
						if call, ok := n.(*ast.CallExpr); ok {
							if fn := typeutil.StaticCallee(info, call); fn != nil {
								callers[fn.Origin()] = append(callers[fn.Origin()], lit)
							}
						}
						return true
					})
					return false
				case *ast.CallExpr:
					if fn := typeutil.StaticCallee(info, n); fn != nil && fn.Origin() != caller {
						callers[fn.Origin()] = append(callers[fn.Origin()], caller)
					}
				}
				return true
			})
		}
	}
	mainPkg := c.pass.Pkg.Name() == "main"
	for changed := true; changed; {
		changed = false
		for fn, decl := range c.chans.decls {
			if startup[fn] || c.chans.values[fn] || len(callers[fn]) == 0 {
				continue
			}
			if decl.Recv != nil && (fn.Exported() || c.chans.ifaceMethods[fn.Name()]) ||
				decl.Recv == nil && fn.Exported() && !mainPkg {
				continue // callers out of sight
			}
			all := true
			for _, caller := range callers[fn] {
				if caller == lit || caller != nil && !startup[caller] {
					all = false
					break
				}
			}
			if all {
				startup[fn] = true
				changed = true
			}
		}
	}
	return startup
}

// guardedOnce reports whether body, before pos, returns early when a
// package-level variable it sets is already set: the lazy start of a
// singleton, which runs its goroutine once per program.
func (c *checker) guardedOnce(body *ast.BlockStmt, pos token.Pos) bool {
	info := c.pass.TypesInfo
	global := func(e ast.Expr) *types.Var {
		id := astx.Name(e)
		if id == nil {
			return nil
		}
		v, ok := info.Uses[id].(*types.Var)
		if !ok || v.IsField() || v.Parent() != c.pass.Pkg.Scope() {
			return nil
		}
		return v
	}
	for _, s := range body.List {
		if s.End() > pos {
			break
		}
		is, ok := s.(*ast.IfStmt)
		if !ok || is.Init != nil || is.Else != nil || len(is.Body.List) != 1 {
			continue
		}
		if _, ret := is.Body.List[0].(*ast.ReturnStmt); !ret {
			continue
		}
		var v *types.Var
		switch cond := ast.Unparen(is.Cond).(type) {
		case *ast.BinaryExpr:
			if cond.Op != token.NEQ {
				continue
			}
			if isNil(info, cond.Y) {
				v = global(cond.X)
			} else if isNil(info, cond.X) {
				v = global(cond.Y)
			}
		default:
			if b, isBasic := info.TypeOf(cond).Underlying().(*types.Basic); isBasic && b.Kind() == types.Bool {
				v = global(cond)
			}
		}
		if v != nil && assigns(info, body, v) {
			return true
		}
	}
	return false
}

// assigns reports whether body assigns to v.
func assigns(info *types.Info, body *ast.BlockStmt, v *types.Var) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		if as, ok := n.(*ast.AssignStmt); ok {
			for _, l := range as.Lhs {
				if id, isID := ast.Unparen(l).(*ast.Ident); isID && info.Uses[id] == v {
					found = true
				}
			}
		}
		return !found
	})
	return found
}
