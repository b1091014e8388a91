// Package cgofree defines an analyzer that reports C memory that Go code
// allocates and never frees, or frees while Go still holds it.
//
// # Analyzer cgofree
//
// cgofree: report C.CString, C.CBytes and C.malloc results that miss C.free on a path, or are freed while Go still holds them
//
// Memory from C.CString, C.CBytes, C.malloc and C.calloc lives outside the
// Go heap: the garbage collector never frees it. A handler that converts
// a header to a C string on every request and loses it leaks a little on
// each call, and the process grows until the container is killed for
// running out of memory, with nothing in a Go heap profile to show why.
// The opposite mistake, freeing memory that a struct, a global or a map
// still points at, turns into a use after free that crashes far from the
// cause, or silently corrupts whatever C allocates there next. A function
// such as
//
//	func lookup(name string) error {
//		cs := C.CString(name) // reported
//		if C.valid(cs) == 0 {
//			return errInvalid
//		}
//		C.lookup(cs)
//		C.free(unsafe.Pointer(cs))
//		return nil
//	}
//
// loses the string on the early return. Defer the free right after the
// allocation:
//
//	cs := C.CString(name)
//	defer C.free(unsafe.Pointer(cs))
//
// Reported, in packages that import "C": an allocation that is dropped or
// only passed to C functions and never freed; an allocation held in a
// local variable that a return, the end of the function, the next loop
// iteration or an assignment to the variable reaches before any free; a
// free of memory that a struct field, global or map reached from outside
// the function still holds; a use of a variable after it was freed.
//
// Not reported: memory freed with a deferred C.free, freed on every path,
// freed by a same-package helper that calls C.free on its parameter,
// returned to the caller, stored into C memory (a field of a C struct or
// through a pointer) or into a Go value that keeps it, such as a struct
// field that the type's Close frees. Memory passed to Go functions the
// analyzer cannot see into is assumed to be handed over.
package cgofree

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"strings"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/cfg"
	"golang.org/x/tools/go/types/typeutil"

	"github.com/herald-hub/herald/analyzers/internal/report"
)

// Analyzer reports C memory that misses C.free or is freed while still held.
var Analyzer = &analysis.Analyzer{
	Name: "cgofree",
	Doc:  "report C.CString, C.CBytes and C.malloc results that miss C.free on a path, or are freed while Go still holds them",
	URL:  "https://github.com/herald-hub/herald/blob/main/docs/leakvet/cgofree.md",
	Run:  run,
}

const (
	msgNever     = "%s result is never freed: defer C.free(unsafe.Pointer(%s)) after the call"
	msgReturn    = "C memory from %s is not freed on the path through this return: defer C.free right after the allocation"
	msgFallOff   = "C memory from %s is not freed on every path: defer C.free right after the allocation"
	msgLoop      = "C memory from %s is not freed before the next loop iteration: free %s at the end of each iteration"
	msgOverwrite = "%s is overwritten before its C memory from %s is freed: free it before the assignment"
	msgDangling  = "%s is freed here but still stored in %s: clear the field or free it in Close"
	msgUseAfter  = "%s is used after C.free: move the free after its last use (defer C.free right after the allocation)"
)

func run(pass *analysis.Pass) (any, error) {
	files, info := cgoSyntax(pass)
	if files == nil {
		return nil, nil // no cgo in this package
	}
	view := *pass
	view.Files = files
	c := &checker{
		pass:      pass,
		info:      info,
		files:     files,
		rep:       report.New(&view),
		freers:    make(map[*types.Func]map[int]bool),
		allocFunc: make(map[*types.Func]bool),
	}
	c.findHelpers()
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				if n.Body != nil {
					c.checkFunc(n.Type, n.Body)
				}
			case *ast.FuncLit:
				c.checkFunc(n.Type, n.Body)
			}
			return true
		})
	}
	return nil, nil
}

// cgoSyntax returns the package's files as written, with "C" imports and
// C.name references, and type information about them. Drivers hand
// analyzers the files that cmd/cgo generated, in which C.CString(s)
// reads (_Cfunc_CString)(s) and a call with pointer arguments is wrapped
// in a closure; the written files are parsed again and type-checked
// with C as an opaque package. It returns nil when no file imports "C".
func cgoSyntax(pass *analysis.Pass) ([]*ast.File, *types.Info) {
	for _, f := range pass.Files {
		if importsC(f) {
			return pass.Files, pass.TypesInfo // the driver kept cgo files as written
		}
	}
	var (
		files []*ast.File
		cgo   bool
	)
	for _, f := range pass.Files {
		tf := pass.Fset.File(f.Pos())
		if tf == nil {
			continue
		}
		written := pass.Fset.Position(f.Pos()).Filename
		if written == tf.Name() || !strings.HasSuffix(written, ".go") {
			if !generatedByCgo(f) {
				files = append(files, f)
			}
			continue
		}
		raw, err := parser.ParseFile(pass.Fset, written, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return nil, nil
		}
		cgo = cgo || importsC(raw)
		files = append(files, raw)
	}
	if !cgo {
		return nil, nil
	}
	imports := make(map[string]*types.Package)
	for _, p := range pass.Pkg.Imports() {
		imports[p.Path()] = p
	}
	conf := &types.Config{
		FakeImportC: true,
		GoVersion:   pass.Pkg.GoVersion(),
		Sizes:       pass.TypesSizes,
		Importer: importerFunc(func(path string) (*types.Package, error) {
			if p := imports[path]; p != nil {
				return p, nil
			}
			return nil, fmt.Errorf("%s not imported", path)
		}),
		Error: func(error) {}, // C names have no types; the rest checked already
	}
	info := &types.Info{
		Types:      make(map[ast.Expr]types.TypeAndValue),
		Defs:       make(map[*ast.Ident]types.Object),
		Uses:       make(map[*ast.Ident]types.Object),
		Selections: make(map[*ast.SelectorExpr]*types.Selection),
	}
	_, _ = conf.Check(pass.Pkg.Path(), pass.Fset, files, info)
	return files, info
}

type importerFunc func(path string) (*types.Package, error)

func (f importerFunc) Import(path string) (*types.Package, error) { return f(path) }

func importsC(f *ast.File) bool {
	for _, s := range f.Imports {
		if s.Path.Value == `"C"` {
			return true
		}
	}
	return false
}

// generatedByCgo reports whether f is cmd/cgo's declarations file, which
// the written files do not refer to.
func generatedByCgo(f *ast.File) bool {
	for _, cg := range f.Comments {
		if cg.Pos() > f.Package {
			break
		}
		if strings.Contains(cg.Text(), "cmd/cgo") {
			return true
		}
	}
	return false
}

type checker struct {
	pass  *analysis.Pass
	info  *types.Info
	files []*ast.File
	rep   *report.Reporter
	// freers maps a same-package function to the indexes of the
	// parameters it frees.
	freers map[*types.Func]map[int]bool
	// allocFunc holds same-package functions that return fresh C memory.
	allocFunc map[*types.Func]bool
}

// cName returns name when call is C.name(...).
func (c *checker) cName(call *ast.CallExpr) string {
	sel, ok := ast.Unparen(call.Fun).(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	id, ok := sel.X.(*ast.Ident)
	if !ok || id.Name != "C" {
		return ""
	}
	if obj, ok := c.info.Uses[id]; ok {
		pn, ok := obj.(*types.PkgName)
		if !ok || pn.Imported().Path() != "C" {
			return ""
		}
	}
	return sel.Sel.Name
}

// allocName names the allocation call makes, or returns "".
func (c *checker) allocName(call *ast.CallExpr) string {
	switch n := c.cName(call); n {
	case "CString", "CBytes", "malloc", "calloc":
		return "C." + n
	case "":
		if fn := typeutil.StaticCallee(c.info, call); fn != nil && c.allocFunc[fn] {
			return fn.Name()
		}
	}
	return ""
}

// freed returns the expressions that call frees: the argument of C.free,
// or the arguments a same-package helper frees.
func (c *checker) freed(call *ast.CallExpr) []ast.Expr {
	if c.cName(call) == "free" {
		if len(call.Args) == 1 {
			return []ast.Expr{c.strip(call.Args[0])}
		}
		return nil
	}
	fn := typeutil.StaticCallee(c.info, call)
	if fn == nil {
		return nil
	}
	var out []ast.Expr
	for i := range c.freers[fn] {
		if i < len(call.Args) {
			out = append(out, c.strip(call.Args[i]))
		}
	}
	return out
}

// strip removes parentheses and pointer conversions around e.
func (c *checker) strip(e ast.Expr) ast.Expr {
	for {
		e = ast.Unparen(e)
		call, ok := e.(*ast.CallExpr)
		if !ok || !c.isConversion(call) {
			return e
		}
		e = call.Args[0]
	}
}

// isConversion reports whether call converts one value, such as
// unsafe.Pointer(p) or (*C.char)(p).
func (c *checker) isConversion(call *ast.CallExpr) bool {
	if len(call.Args) != 1 {
		return false
	}
	if tv, ok := c.info.Types[call.Fun]; ok && tv.IsType() {
		return true
	}
	switch fun := ast.Unparen(call.Fun).(type) {
	case *ast.StarExpr, *ast.ArrayType:
		return true
	case *ast.SelectorExpr:
		if id, ok := fun.X.(*ast.Ident); ok && id.Name == "unsafe" && fun.Sel.Name == "Pointer" {
			return true
		}
	}
	return false
}

// findHelpers finds the package's functions that free a parameter and
// those that return fresh C memory, through any depth of wrappers.
func (c *checker) findHelpers() {
	var decls []*ast.FuncDecl
	for _, f := range c.files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				decls = append(decls, fd)
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for _, fd := range decls {
			fn, ok := c.info.Defs[fd.Name].(*types.Func)
			if !ok {
				continue
			}
			params := paramObjects(c.info, fd.Type)
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				for _, e := range c.freed(call) {
					id, ok := e.(*ast.Ident)
					if !ok {
						continue
					}
					for i, p := range params {
						if p != nil && c.info.Uses[id] == p && !c.freers[fn][i] {
							if c.freers[fn] == nil {
								c.freers[fn] = make(map[int]bool)
							}
							c.freers[fn][i] = true
							changed = true
						}
					}
				}
				return true
			})
			if !c.allocFunc[fn] && c.returnsFresh(fd) {
				c.allocFunc[fn] = true
				changed = true
			}
		}
	}
}

// returnsFresh reports whether every return of fd returns nil or an
// allocation, and one of them an allocation.
func (c *checker) returnsFresh(fd *ast.FuncDecl) bool {
	if fd.Type.Results == nil || fd.Type.Results.NumFields() != 1 {
		return false
	}
	fresh, other := false, false
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.ReturnStmt:
			if len(n.Results) != 1 {
				other = true
				return false
			}
			e := c.strip(n.Results[0])
			if id, ok := e.(*ast.Ident); ok && id.Name == "nil" {
				return false
			}
			if call, ok := e.(*ast.CallExpr); ok && c.allocName(call) != "" {
				fresh = true
				return false
			}
			other = true
		}
		return true
	})
	return fresh && !other
}

func paramObjects(info *types.Info, ft *ast.FuncType) []types.Object {
	var out []types.Object
	for _, f := range ft.Params.List {
		if len(f.Names) == 0 {
			out = append(out, nil)
		}
		for _, n := range f.Names {
			out = append(out, info.Defs[n])
		}
	}
	return out
}

// fn is one function body under analysis.
type fn struct {
	c       *checker
	typ     *ast.FuncType
	body    *ast.BlockStmt
	parents map[ast.Node]ast.Node
	g       *cfg.CFG
}

func (c *checker) checkFunc(typ *ast.FuncType, body *ast.BlockStmt) {
	f := &fn{c: c, typ: typ, body: body, parents: make(map[ast.Node]ast.Node)}
	var allocs []*ast.CallExpr
	var stack []ast.Node
	ast.Inspect(body, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		if len(stack) > 0 {
			f.parents[n] = stack[len(stack)-1]
		}
		stack = append(stack, n)
		if lit, ok := n.(*ast.FuncLit); ok && lit.Body != body {
			// Nested functions are checked on their own, but their
			// nodes are needed to see what they do with our variables.
			return true
		}
		if call, ok := n.(*ast.CallExpr); ok && c.allocName(call) != "" && f.owns(call) {
			allocs = append(allocs, call)
		}
		return true
	})
	for _, a := range allocs {
		f.checkAlloc(a)
	}
	f.checkUseAfterFree()
}

// owns reports whether n belongs to f's body and not to a nested function.
func (f *fn) owns(n ast.Node) bool {
	for p := f.parents[n]; p != nil; p = f.parents[p] {
		if _, ok := p.(*ast.FuncLit); ok {
			return false
		}
	}
	return true
}

// enclosingLit returns the innermost function literal inside f that
// holds n, or nil.
func (f *fn) enclosingLit(n ast.Node) *ast.FuncLit {
	for p := f.parents[n]; p != nil; p = f.parents[p] {
		if lit, ok := p.(*ast.FuncLit); ok {
			return lit
		}
	}
	return nil
}

func (f *fn) graph() *cfg.CFG {
	if f.g == nil {
		f.g = cfg.New(f.body, f.mayReturn)
	}
	return f.g
}

func (f *fn) mayReturn(call *ast.CallExpr) bool {
	switch obj := typeutil.Callee(f.c.info, call).(type) {
	case *types.Builtin:
		return obj.Name() != "panic"
	case *types.Func:
		switch obj.FullName() {
		case "os.Exit", "log.Fatal", "log.Fatalf", "log.Fatalln", "log.Panic", "log.Panicf", "log.Panicln", "runtime.Goexit":
			return false
		}
	}
	return true
}

// Uses of a value, as climb sees them.
type useKind int

const (
	useRead    useKind = iota // read, or passed to C
	useEscape                 // kept somewhere the analyzer does not follow
	useFree                   // freed
	useDefer                  // freed by a deferred call
	useReturn                 // returned: the caller owns it
	useToC                    // stored in C memory: C owns it
	useStoreGo                // stored in a Go value that outlives the call
	useDrop                   // dropped on the floor or only passed to C
)

// use classifies how the value of e is used, looking through
// conversions and unsafe views of it. For useStoreGo, target is where.
func (f *fn) use(e ast.Expr) (kind useKind, at ast.Node, target ast.Expr) {
	var cur ast.Node = e
	for {
		p := f.parents[cur]
		switch p := p.(type) {
		case *ast.ParenExpr:
			cur = p
			continue
		case *ast.SliceExpr:
			if p.X == cur {
				cur = p
				continue
			}
			return useRead, p, nil
		case *ast.CallExpr:
			if p.Fun == cur {
				return useRead, p, nil
			}
			if f.c.isConversion(p) || f.isUnsafeView(p, cur) {
				cur = p
				continue
			}
			if _, ok := f.c.info.Uses[calleeIdent(p)].(*types.Builtin); ok {
				return useRead, p, nil // copy, len, ...
			}
			for _, fe := range f.c.freed(p) {
				if fe == f.c.strip(cur.(ast.Expr)) {
					if d, ok := f.parents[p].(*ast.DeferStmt); ok {
						return useDefer, d, nil
					}
					return useFree, p, nil
				}
			}
			if f.c.cName(p) != "" {
				return useDrop, p, nil // C reads it and keeps nothing
			}
			return useEscape, p, nil
		case *ast.ExprStmt:
			return useDrop, p, nil
		case *ast.ReturnStmt:
			return useReturn, p, nil
		case *ast.AssignStmt:
			for i, r := range p.Rhs {
				if r != cur || len(p.Lhs) != len(p.Rhs) {
					continue
				}
				return f.store(p, p.Lhs[i])
			}
			return useRead, p, nil // cur is on the left: a write through it
		case *ast.ValueSpec:
			return useEscape, p, nil
		case *ast.BinaryExpr, *ast.IndexExpr, *ast.StarExpr, *ast.IfStmt, *ast.SwitchStmt, *ast.CaseClause:
			return useRead, p, nil
		case *ast.SelectorExpr:
			return useRead, p, nil
		default:
			return useEscape, p, nil
		}
	}
}

func calleeIdent(call *ast.CallExpr) *ast.Ident {
	switch fun := ast.Unparen(call.Fun).(type) {
	case *ast.Ident:
		return fun
	case *ast.SelectorExpr:
		return fun.Sel
	}
	return nil
}

// isUnsafeView reports whether call is unsafe.Slice, unsafe.String or
// unsafe.Add over arg: a view of the same memory.
func (f *fn) isUnsafeView(call *ast.CallExpr, arg ast.Node) bool {
	sel, ok := ast.Unparen(call.Fun).(*ast.SelectorExpr)
	if !ok || len(call.Args) == 0 || call.Args[0] != arg {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	if !ok || id.Name != "unsafe" {
		return false
	}
	switch sel.Sel.Name {
	case "Slice", "String", "Add", "SliceData", "StringData":
		return true
	}
	return false
}

// store classifies the assignment of a value to lhs.
func (f *fn) store(as *ast.AssignStmt, lhs ast.Expr) (useKind, ast.Node, ast.Expr) {
	switch l := ast.Unparen(lhs).(type) {
	case *ast.Ident:
		if l.Name == "_" {
			return useDrop, as, nil
		}
		obj := f.c.info.ObjectOf(l)
		if packageLevel(obj) {
			return useStoreGo, as, l
		}
		return useEscape, as, nil // an alias, or the variable itself
	case *ast.StarExpr:
		return useToC, as, nil // through a pointer: an out parameter or C memory
	case *ast.SelectorExpr:
		if f.cMemory(l.X) {
			return useToC, as, nil
		}
		if sel := f.c.info.Selections[l]; sel != nil {
			return useStoreGo, as, l
		}
		if _, ok := f.c.info.Uses[l.Sel].(*types.Var); ok {
			return useStoreGo, as, l // a package-level variable of another package
		}
		return useToC, as, nil
	case *ast.IndexExpr:
		if f.cMemory(l.X) {
			return useToC, as, nil
		}
		return useStoreGo, as, l
	}
	return useEscape, as, nil
}

// cMemory reports whether e is C memory: a value of a C type, or of no
// type at all, as C types are when the written files are checked.
func (f *fn) cMemory(e ast.Expr) bool {
	t := f.c.info.TypeOf(e)
	if t == nil || t == types.Typ[types.Invalid] {
		return true
	}
	for {
		switch u := t.(type) {
		case *types.Pointer:
			t = u.Elem()
			continue
		case *types.Named:
			return strings.HasPrefix(u.Obj().Name(), "_Ctype_")
		case *types.Alias:
			t = types.Unalias(u)
			continue
		}
		break
	}
	if a, ok := t.Underlying().(*types.Array); ok {
		if n, ok := a.Elem().(*types.Named); ok {
			return strings.HasPrefix(n.Obj().Name(), "_Ctype_")
		}
	}
	return false
}

// checkAlloc checks one allocation made in f's body.
func (f *fn) checkAlloc(a *ast.CallExpr) {
	name := f.c.allocName(a)
	kind, at, _ := f.use(a)
	switch kind {
	case useDrop:
		f.c.rep.Report(a, fmt.Sprintf(msgNever, name, "cs"))
		return
	case useEscape:
		// The value is held by a variable (or handed to Go code).
		as, ok := at.(*ast.AssignStmt)
		if !ok {
			if vs, ok := at.(*ast.ValueSpec); ok {
				for i, v := range vs.Values {
					if f.c.strip(v) == a && i < len(vs.Names) {
						f.checkVar(a, name, vs, vs.Names[i])
					}
				}
			}
			return
		}
		for i, r := range as.Rhs {
			if f.c.strip(r) == a && len(as.Lhs) == len(as.Rhs) {
				if id, ok := as.Lhs[i].(*ast.Ident); ok {
					f.checkVar(a, name, as, id)
				}
			}
		}
	}
	// Stored straight into a Go field, global or map: the value that
	// holds it owns it. Returned, or stored into C memory: handed over.
}

// event is something done to a tracked variable at a node of the body.
type event struct {
	kind   useKind
	node   ast.Node // statement or call where it happens
	target ast.Expr // for useStoreGo
	def    bool     // the variable is assigned a new value here
	// closure is set for a deferred closure that frees the variable: it
	// reads the variable when it runs, so it frees whatever the variable
	// holds then, even memory allocated after the defer statement.
	closure bool
}

// checkVar follows the variable id that holds the allocation a, made by
// the statement def.
func (f *fn) checkVar(a *ast.CallExpr, name string, def ast.Node, id *ast.Ident) {
	v, ok := f.c.info.ObjectOf(id).(*types.Var)
	if !ok || v.Parent() == nil || v.Pos() < f.body.Pos() || v.Pos() >= f.body.End() {
		return // not a local variable of this function
	}
	var events []event
	escaped := false
	ast.Inspect(f.body, func(n ast.Node) bool {
		ref, ok := n.(*ast.Ident)
		if !ok || f.c.info.ObjectOf(ref) != v || ref == id {
			return true
		}
		if as, ok := f.parents[ref].(*ast.AssignStmt); ok && isLHS(as, ref) {
			events = append(events, event{node: as, def: true})
			return true
		}
		if vs, ok := f.parents[ref].(*ast.ValueSpec); ok {
			events = append(events, event{node: vs, def: true})
			return true
		}
		kind, at, target := f.use(ref)
		if lit := f.enclosingLit(ref); lit != nil {
			// Inside a closure: only a deferred closure that frees it
			// is understood.
			if kind == useFree && f.deferredLit(lit) != nil {
				events = append(events, event{kind: useDefer, node: f.deferredLit(lit), closure: true})
				return true
			}
			if kind != useRead && kind != useDrop {
				escaped = true
			}
			return true
		}
		switch kind {
		case useEscape:
			escaped = true
		case useFree, useDefer, useReturn, useToC, useStoreGo:
			events = append(events, event{kind: kind, node: at, target: target})
		}
		return true
	})
	f.checkDangling(v, events)
	if escaped {
		return
	}
	for _, e := range events {
		if e.kind == useStoreGo {
			return // the Go value keeps it; its owner frees it
		}
	}
	kills := 0
	for _, e := range events {
		if !e.def {
			kills++
		}
	}
	if kills == 0 {
		f.c.rep.Report(a, fmt.Sprintf(msgNever, name, v.Name()))
		return
	}
	f.findLeak(a, def, name, v, events)
}

func isLHS(as *ast.AssignStmt, id *ast.Ident) bool {
	for _, l := range as.Lhs {
		if l == id {
			return true
		}
	}
	return false
}

// deferredLit returns the defer statement that calls lit, or nil.
func (f *fn) deferredLit(lit *ast.FuncLit) *ast.DeferStmt {
	call, ok := f.parents[lit].(*ast.CallExpr)
	if !ok || call.Fun != lit {
		return nil
	}
	d, _ := f.parents[call].(*ast.DeferStmt)
	if d == nil || f.enclosingLit(d) != nil {
		return nil
	}
	return d
}

// findLeak walks the paths from the allocation a, in statement def, and
// reports the first on which it is lost before a free or a handover.
func (f *fn) findLeak(a *ast.CallExpr, def ast.Node, name string, v *types.Var, events []event) {
	g := f.graph()
	start, idx := locate(g, def)
	if start == nil {
		return
	}
	type item struct {
		b *cfg.Block
		i int
	}
	atExit := false // a deferred closure frees whatever v holds at the end
	for _, e := range events {
		atExit = atExit || e.closure
	}
	seen := map[*cfg.Block]bool{}
	work := []item{{start, idx + 1}}
	for len(work) > 0 {
		it := work[len(work)-1]
		work = work[:len(work)-1]
		b := it.b
		stopped := false
		for i := it.i; i < len(b.Nodes) && !stopped; i++ {
			n := b.Nodes[i]
			if n == def {
				f.c.rep.Report(a, fmt.Sprintf(msgLoop, name, v.Name()))
				return
			}
			for _, e := range events {
				if !within(e.node, n) {
					continue
				}
				if e.def {
					f.c.rep.Report(n, fmt.Sprintf(msgOverwrite, v.Name(), name))
					return
				}
				stopped = true
			}
			if stopped {
				break
			}
			if ret, ok := n.(*ast.ReturnStmt); ok && !atExit {
				if ret.Return == f.body.Rbrace { // the end of the body
					f.c.rep.Report(a, fmt.Sprintf(msgFallOff, name))
				} else {
					f.c.rep.Report(ret, fmt.Sprintf(msgReturn, name))
				}
				return
			}
		}
		if stopped {
			continue
		}
		for i, s := range b.Succs {
			if seen[s] || nilOnEdge(f.c.info, b, i, v) {
				continue
			}
			if id := rangeAssigns(f.c.info, s, v); id != nil {
				f.c.rep.Report(id, fmt.Sprintf(msgOverwrite, v.Name(), name))
				return
			}
			seen[s] = true
			work = append(work, item{s, 0})
		}
	}
}

// locate finds the block and index of the node n of g.
func locate(g *cfg.CFG, n ast.Node) (*cfg.Block, int) {
	for _, b := range g.Blocks {
		if !b.Live {
			continue
		}
		for i, m := range b.Nodes {
			if m == n {
				return b, i
			}
		}
	}
	return nil, 0
}

// within reports whether n lies inside the node m of a graph.
func within(n, m ast.Node) bool {
	return m.Pos() <= n.Pos() && n.End() <= m.End()
}

// rangeAssigns reports whether entering b, the body of a range loop,
// assigns v a new value: the graph puts the loop's key and value before
// the loop, not at the start of each iteration.
func rangeAssigns(info *types.Info, b *cfg.Block, v *types.Var) *ast.Ident {
	rs, ok := b.Stmt.(*ast.RangeStmt)
	if !ok || b.Kind != cfg.KindRangeBody {
		return nil
	}
	for _, e := range []ast.Expr{rs.Key, rs.Value} {
		if id, ok := e.(*ast.Ident); ok && info.ObjectOf(id) == v {
			return id
		}
	}
	return nil
}

// nilOnEdge reports whether the i'th successor of b is taken only when v
// is nil: there is nothing to free on that path.
func nilOnEdge(info *types.Info, b *cfg.Block, i int, v *types.Var) bool {
	if len(b.Succs) != 2 || len(b.Nodes) == 0 {
		return false
	}
	cond, ok := b.Nodes[len(b.Nodes)-1].(*ast.BinaryExpr)
	if !ok || (cond.Op != token.EQL && cond.Op != token.NEQ) {
		return false
	}
	isV := func(e ast.Expr) bool {
		id, ok := ast.Unparen(e).(*ast.Ident)
		return ok && info.ObjectOf(id) == v
	}
	isNil := func(e ast.Expr) bool {
		id, ok := ast.Unparen(e).(*ast.Ident)
		return ok && id.Name == "nil"
	}
	if !(isV(cond.X) && isNil(cond.Y) || isNil(cond.X) && isV(cond.Y)) {
		return false
	}
	if cond.Op == token.EQL {
		return i == 0
	}
	return i == 1
}

// checkDangling reports a free of v while a Go value that outlives the
// call still holds it.
func (f *fn) checkDangling(v *types.Var, events []event) {
	for _, st := range events {
		if st.kind != useStoreGo || !f.outlives(st.target) || f.cleared(st) {
			continue
		}
		for _, fr := range events {
			if fr.kind != useFree && fr.kind != useDefer {
				continue
			}
			if fr.kind == useFree && !f.reaches(st.node, fr.node) {
				continue
			}
			at := fr.node
			if d, ok := at.(*ast.DeferStmt); ok {
				at = d.Call
			}
			f.c.rep.Report(at, fmt.Sprintf(msgDangling, v.Name(), types.ExprString(st.target)))
			return
		}
	}
}

// outlives reports whether target is reached from outside the function:
// a package-level variable, or a field or element of one, or of a
// parameter or receiver.
func (f *fn) outlives(target ast.Expr) bool {
	e := target
	for {
		switch x := ast.Unparen(e).(type) {
		case *ast.SelectorExpr:
			if _, ok := f.c.info.Selections[x]; !ok {
				return true // pkg.Var
			}
			e = x.X
			continue
		case *ast.IndexExpr:
			e = x.X
			continue
		case *ast.StarExpr:
			e = x.X
			continue
		case *ast.Ident:
			obj, ok := f.c.info.ObjectOf(x).(*types.Var)
			if !ok {
				return false
			}
			if packageLevel(obj) {
				return true
			}
			for _, p := range paramObjects(f.c.info, f.typ) {
				if p == obj {
					return true
				}
			}
			return f.isRecv(obj)
		}
		return false
	}
}

func (f *fn) isRecv(obj *types.Var) bool {
	for _, file := range f.c.files {
		for _, d := range file.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if ok && fd.Body == f.body && fd.Recv != nil {
				for _, r := range fd.Recv.List {
					for _, n := range r.Names {
						if f.c.info.Defs[n] == obj {
							return true
						}
					}
				}
			}
		}
	}
	return false
}

// cleared reports whether the function assigns the store's target again,
// such as s.name = nil after the free.
func (f *fn) cleared(st event) bool {
	want := types.ExprString(st.target)
	found := false
	ast.Inspect(f.body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			if n != st.node {
				for _, l := range n.Lhs {
					found = found || types.ExprString(l) == want
				}
			}
		case *ast.CallExpr:
			// delete(m, k) clears a map entry.
			ix, ok := st.target.(*ast.IndexExpr)
			id, isIdent := ast.Unparen(n.Fun).(*ast.Ident)
			if ok && isIdent && id.Name == "delete" && len(n.Args) == 2 && types.ExprString(n.Args[0]) == types.ExprString(ix.X) {
				found = true
			}
		}
		return !found
	})
	return found
}

// reaches reports whether control can flow from the statement holding
// from to the one holding to.
func (f *fn) reaches(from, to ast.Node) bool {
	g := f.graph()
	fb, fi := locateWithin(g, from)
	tb, ti := locateWithin(g, to)
	if fb == nil || tb == nil {
		return false
	}
	if fb == tb && fi < ti {
		return true
	}
	seen := map[*cfg.Block]bool{}
	work := append([]*cfg.Block(nil), fb.Succs...)
	for len(work) > 0 {
		b := work[len(work)-1]
		work = work[:len(work)-1]
		if b == tb {
			return true
		}
		if seen[b] {
			continue
		}
		seen[b] = true
		work = append(work, b.Succs...)
	}
	return false
}

// locateWithin finds the node of g that holds n.
func locateWithin(g *cfg.CFG, n ast.Node) (*cfg.Block, int) {
	for _, b := range g.Blocks {
		if !b.Live {
			continue
		}
		for i, m := range b.Nodes {
			if within(n, m) {
				return b, i
			}
		}
	}
	return nil, 0
}

// checkUseAfterFree reports a read of a local variable or parameter
// after a direct free of it, before it is assigned again.
func (f *fn) checkUseAfterFree() {
	ast.Inspect(f.body, func(n ast.Node) bool {
		if _, ok := n.(*ast.FuncLit); ok {
			return false
		}
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		if _, ok := f.parents[call].(*ast.DeferStmt); ok {
			return true
		}
		for _, e := range f.c.freed(call) {
			id, ok := e.(*ast.Ident)
			if !ok {
				continue
			}
			v, ok := f.c.info.ObjectOf(id).(*types.Var)
			if !ok || packageLevel(v) {
				continue
			}
			if use := f.usedAfter(call, v); use != nil {
				f.c.rep.Report(use, fmt.Sprintf(msgUseAfter, v.Name()))
			}
		}
		return true
	})
}

// usedAfter returns the first read of v on a path from the free call,
// or nil.
func (f *fn) usedAfter(free *ast.CallExpr, v *types.Var) *ast.Ident {
	g := f.graph()
	b, i := locateWithin(g, free)
	if b == nil {
		return nil
	}
	// scan looks at node n and reports (use, stop).
	scan := func(n ast.Node) (*ast.Ident, bool) {
		var use *ast.Ident
		assigned := false
		switch n := n.(type) {
		case *ast.Ident: // a range key or value
			return nil, f.c.info.ObjectOf(n) == v
		case *ast.ValueSpec:
			for _, nm := range n.Names {
				if f.c.info.Defs[nm] == v {
					return nil, true
				}
			}
		}
		ast.Inspect(n, func(m ast.Node) bool {
			if use != nil {
				return false
			}
			switch m := m.(type) {
			case *ast.FuncLit:
				return false
			case *ast.AssignStmt:
				for _, l := range m.Lhs {
					if id, ok := l.(*ast.Ident); ok && f.c.info.ObjectOf(id) == v {
						assigned = true
					}
				}
				for _, r := range m.Rhs {
					ast.Inspect(r, func(x ast.Node) bool {
						if id, ok := x.(*ast.Ident); ok && f.c.info.Uses[id] == v && use == nil {
							use = id
						}
						return use == nil
					})
				}
				return false
			case *ast.Ident:
				if f.c.info.Uses[m] == v && !isNilCheck(f.parents[m]) {
					use = m
				}
			}
			return true
		})
		return use, assigned || use != nil
	}
	// The rest of the free's own statement is not inspected: it is
	// usually the free itself.
	seen := map[*cfg.Block]bool{}
	type item struct {
		b *cfg.Block
		i int
	}
	work := []item{{b, i + 1}}
	for len(work) > 0 {
		it := work[len(work)-1]
		work = work[:len(work)-1]
		stop := false
		for j := it.i; j < len(it.b.Nodes); j++ {
			if use, s := scan(it.b.Nodes[j]); use != nil {
				return use
			} else if s {
				stop = true
				break
			}
		}
		if stop {
			continue
		}
		for _, s := range it.b.Succs {
			if !seen[s] && rangeAssigns(f.c.info, s, v) == nil {
				seen[s] = true
				work = append(work, item{s, 0})
			}
		}
	}
	return nil
}

func packageLevel(obj types.Object) bool {
	return obj != nil && obj.Pkg() != nil && obj.Parent() == obj.Pkg().Scope()
}

// isNilCheck reports whether n compares with nil: checking a pointer
// after freeing it reads nothing behind it.
func isNilCheck(n ast.Node) bool {
	b, ok := n.(*ast.BinaryExpr)
	if !ok || (b.Op != token.EQL && b.Op != token.NEQ) {
		return false
	}
	for _, e := range []ast.Expr{b.X, b.Y} {
		if id, ok := ast.Unparen(e).(*ast.Ident); ok && id.Name == "nil" {
			return true
		}
	}
	return false
}
