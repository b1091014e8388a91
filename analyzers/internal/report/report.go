// Package report is how leakvet's analyzers report a finding: one line
// that names the leak and its fix, at the position a reader looks first,
// unless the code there says it is deliberate.
//
// A finding is silenced by a comment on its line, or alone on the line
// above, of the form
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
	// ignores maps a file to its lines that carry a directive: true when
	// it gives a reason.
	ignores map[*token.File]map[int]bool
}

// New returns a Reporter for pass.
func New(pass *analysis.Pass) *Reporter {
	r := &Reporter{pass: pass, ignores: make(map[*token.File]map[int]bool)}
	for _, f := range pass.Files {
		tf := pass.Fset.File(f.Pos())
		if tf == nil {
			continue
		}
		for _, cg := range f.Comments {
			for _, c := range cg.List {
				text, ok := strings.CutPrefix(c.Text, Directive)
				if !ok || (text != "" && text[0] != ' ' && text[0] != '\t') {
					continue
				}
				lines := r.ignores[tf]
				if lines == nil {
					lines = make(map[int]bool)
					r.ignores[tf] = lines
				}
				lines[tf.Line(c.Pos())] = strings.TrimSpace(text) != ""
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
			reason, ok := lines[l]
			if !ok {
				continue
			}
			if reason {
				return
			}
			msg += " (" + Directive + " needs a reason to silence this)"
			break
		}
	}
	r.pass.Report(analysis.Diagnostic{Pos: pos, End: end, Message: msg, SuggestedFixes: fixes})
}
