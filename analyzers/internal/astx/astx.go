// Package astx holds the small syntax and type helpers leakvet's
// analyzers share.
package astx

import (
	"go/ast"
	"go/types"
)

// LookupType finds the named type path.name among the packages pkg
// imports, directly or not; nil when pkg does not reach it.
func LookupType(pkg *types.Package, path, name string) types.Type {
	seen := map[*types.Package]bool{}
	var find func(p *types.Package) types.Type
	find = func(p *types.Package) types.Type {
		if seen[p] {
			return nil
		}
		seen[p] = true
		if p.Path() == path {
			if obj, ok := p.Scope().Lookup(name).(*types.TypeName); ok {
				return obj.Type()
			}
			return nil
		}
		for _, imp := range p.Imports() {
			if t := find(imp); t != nil {
				return t
			}
		}
		return nil
	}
	return find(pkg)
}

// FuncBody returns the body of a function declaration or literal, nil
// for anything else (and for a declaration without a body).
func FuncBody(fn ast.Node) *ast.BlockStmt {
	switch fn := fn.(type) {
	case *ast.FuncDecl:
		return fn.Body
	case *ast.FuncLit:
		return fn.Body
	}
	return nil
}

// LoopBody returns the body of a for or range statement, nil for
// anything else.
func LoopBody(loop ast.Stmt) *ast.BlockStmt {
	switch l := loop.(type) {
	case *ast.ForStmt:
		return l.Body
	case *ast.RangeStmt:
		return l.Body
	}
	return nil
}

// Name returns the identifier that names e: e itself when it is an
// identifier, the selected name when it is a selector (x.f, pkg.V), nil
// otherwise. Parentheses are looked through.
func Name(e ast.Expr) *ast.Ident {
	switch e := ast.Unparen(e).(type) {
	case *ast.Ident:
		return e
	case *ast.SelectorExpr:
		return e.Sel
	}
	return nil
}
