// Package report is how leakvet's analyzers report a finding: one line
// that names the leak and its fix, at the position a reader looks first,
// unless the code there says it is deliberate.
//
// A finding is silenced by a comment at the end of its line, or alone on
// the line above, of the form
//
//	//leakvet:ignore <reason>
//
// The reason is required: a bare //leakvet:ignore silences nothing, and the
// finding says why it was not silenced.
package report

import (
	"go/ast"
	"go/token"
	"strings"

	"golang.org/x/tools/go/analysis"
)

// Directive starts a suppression comment.
const Directive = "//leakvet:ignore"

// Reporter reports the findings of one analysis pass.
type Reporter struct {
	pass *analysis.Pass
	// ignores maps a file to its lines that carry a directive.
	ignores map[*token.File]map[int]directive
}

// directive is one //leakvet:ignore comment.
type directive struct {
	reason bool // it says why
	alone  bool // no code before it on its line: it covers the next line
}

// New returns a Reporter for pass.
func New(pass *analysis.Pass) *Reporter {
	r := &Reporter{pass: pass, ignores: make(map[*token.File]map[int]directive)}
	for _, f := range pass.Files {
		tf := pass.Fset.File(f.Pos())
		if tf == nil {
			continue
		}
		var code map[int]token.Pos // line -> first position of code on it
		for _, cg := range f.Comments {
			for _, c := range cg.List {
				text, ok := strings.CutPrefix(c.Text, Directive)
				if !ok || (text != "" && text[0] != ' ' && text[0] != '\t') {
					continue
				}
				if code == nil {
					code = firstCode(f, tf)
				}
				lines := r.ignores[tf]
				if lines == nil {
					lines = make(map[int]directive)
					r.ignores[tf] = lines
				}
				line := tf.Line(c.Pos())
				first, hasCode := code[line]
				// A comment after the directive (// want, // TODO) is no reason.
				reason, _, _ := strings.Cut(text, "//")
				lines[line] = directive{
					reason: strings.TrimSpace(reason) != "",
					alone:  !hasCode || first > c.Pos(),
				}
			}
		}
	}
	return r
}

// Report reports msg at node, with optional suggested fixes, unless a
// directive with a reason covers the node's first line.
func (r *Reporter) Report(node ast.Node, msg string, fixes ...analysis.SuggestedFix) {
	r.ReportRange(node.Pos(), node.End(), msg, fixes...)
}

// ReportRange is Report for an explicit range.
func (r *Reporter) ReportRange(pos, end token.Pos, msg string, fixes ...analysis.SuggestedFix) {
	if tf := r.pass.Fset.File(pos); tf != nil {
		line := tf.Line(pos)
		lines := r.ignores[tf]
		for _, l := range []int{line, line - 1} {
			d, ok := lines[l]
			if !ok || l != line && !d.alone {
				continue
			}
			if d.reason {
				return
			}
			msg += " (" + Directive + " needs a reason to silence this)"
			break
		}
	}
	r.pass.Report(analysis.Diagnostic{Pos: pos, End: end, Message: msg, SuggestedFixes: fixes})
}

// firstCode maps each line of f to the position of the first syntax node
// that starts on it.
func firstCode(f *ast.File, tf *token.File) map[int]token.Pos {
	code := make(map[int]token.Pos)
	ast.Inspect(f, func(n ast.Node) bool {
		if n == nil {
			return false
		}
		switch n.(type) {
		case *ast.Comment, *ast.CommentGroup:
			return false
		}
		if !n.Pos().IsValid() || tf.Base() > int(n.Pos()) || int(n.Pos()) > tf.Base()+tf.Size() {
			return true
		}
		line := tf.Line(n.Pos())
		if p, ok := code[line]; !ok || n.Pos() < p {
			code[line] = n.Pos()
		}
		return true
	})
	return code
}
