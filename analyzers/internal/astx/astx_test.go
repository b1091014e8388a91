package astx

import (
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"testing"
)

func TestHelpers(t *testing.T) {
	const src = `package p

import "net/http"

var _ http.Handler

func f() { for {} ; for range 3 {} }

var g = func() {}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	conf := types.Config{Importer: importer.Default()}
	pkg, err := conf.Check("p", fset, []*ast.File{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if typ := LookupType(pkg, "net/http", "Pusher"); typ == nil || typ.String() != "net/http.Pusher" {
		t.Errorf("LookupType(net/http.Pusher) = %v", typ)
	}
	if typ := LookupType(pkg, "net/http", "NoSuchType"); typ != nil {
		t.Errorf("LookupType of a missing name = %v", typ)
	}
	if typ := LookupType(pkg, "os/exec", "Cmd"); typ != nil {
		t.Errorf("LookupType of a package not imported = %v", typ)
	}
	fd := f.Decls[2].(*ast.FuncDecl)
	if FuncBody(fd) != fd.Body {
		t.Error("FuncBody(FuncDecl)")
	}
	lit := f.Decls[3].(*ast.GenDecl).Specs[0].(*ast.ValueSpec).Values[0].(*ast.FuncLit)
	if FuncBody(lit) != lit.Body || FuncBody(fd.Type) != nil {
		t.Error("FuncBody(FuncLit) or of a non-function")
	}
	loops := fd.Body.List
	if LoopBody(loops[0]) != loops[0].(*ast.ForStmt).Body || LoopBody(loops[1]) != loops[1].(*ast.RangeStmt).Body {
		t.Error("LoopBody")
	}
	sel := &ast.SelectorExpr{X: ast.NewIdent("pkg"), Sel: ast.NewIdent("V")}
	if Name(sel) != sel.Sel || Name(&ast.ParenExpr{X: sel.X}) != sel.X || Name(&ast.BasicLit{}) != nil {
		t.Error("Name")
	}
	if LoopBody(&ast.EmptyStmt{}) != nil {
		t.Error("LoopBody of a non-loop")
	}
}
