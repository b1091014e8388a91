// Command leakvet-compare runs go vet's lostcancel, contextcheck and
// leakvet over the analysistest cases of every leakvet analyzer and prints
// a Markdown table of what each tool reports.
//
//	go run ./scripts/leakvet-compare            # from the repository root
//
// A case is a top-level function, method or variable of a testdata file.
// Above the "---- Not reported ----" marker, the declarations that carry a
// `// want` line are leaks (found when a tool reports anything inside
// them); the others there are helpers of those cases and are not counted.
// Below the marker, every function and variable is correct code (a report
// there is a false positive). leakvet runs with the analyzer whose cases
// they are; the other tools run whole.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

const marker = "---- Not reported ----"

// contextcheck is the version measured; go run fetches it from the module
// proxy, outside herald's go.mod.
const contextcheck = "github.com/kkHAIKE/contextcheck/cmd/contextcheck@v1.1.6"

type span struct {
	file       string
	start, end int
	leak       bool
	name       string
}

type tool struct {
	name string
	args []string // the command; package patterns are appended
}

func main() {
	root := flag.String("root", ".", "repository root")
	verbose := flag.Bool("v", false, "list, per tool, the leak cases missed and the correct cases reported")
	flag.Parse()
	dirs, err := filepath.Glob(filepath.Join(*root, "analyzers", "*", "testdata", "src", "*"))
	if err != nil || len(dirs) == 0 {
		fmt.Fprintln(os.Stderr, "no testdata packages found under analyzers/*/testdata/src")
		os.Exit(1)
	}
	sort.Strings(dirs)
	leakvet := filepath.Join(os.TempDir(), "leakvet-compare-bin")
	if out, err := exec.Command("go", "build", "-o", leakvet, "./cmd/leakvet").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build leakvet: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.Remove(leakvet)
	tools := []tool{
		{"go vet (lostcancel)", []string{"go", "vet", "-lostcancel", "-json"}},
		{"contextcheck", []string{"go", "run", contextcheck, "-json"}},
		{"leakvet", []string{leakvet, "-json"}}, // + -<analyzer>
	}

	fmt.Println("| analyzer (cases: leaks / correct) | " + strings.Join(names(tools), " | ") + " |")
	fmt.Println("|---|" + strings.Repeat("---:|", len(tools)))
	totals := make([][2]int, len(tools))
	var leaks, oks int
	for _, dir := range dirs {
		analyzer := filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(dir))))
		spans, err := cases(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		nLeak, nOK := 0, 0
		for _, s := range spans {
			if s.leak {
				nLeak++
			} else {
				nOK++
			}
		}
		if nLeak+nOK == 0 {
			continue // a package that only checks the analyzer does not crash
		}
		leaks += nLeak
		oks += nOK
		row := fmt.Sprintf("| %s (%d / %d) |", analyzer, nLeak, nOK)
		for i, t := range tools {
			if t.name == "leakvet" {
				t.args = append(t.args[:len(t.args):len(t.args)], "-"+analyzer)
			}
			lines, err := run(t, "./"+filepath.ToSlash(dir))
			if err != nil {
				row += " error |"
				fmt.Fprintf(os.Stderr, "%s on %s: %v\n", t.name, dir, err)
				continue
			}
			found, false_, missed, wrong := score(spans, lines)
			if *verbose {
				fmt.Fprintf(os.Stderr, "%s on %s: missed %v; reported correct code %v\n", t.name, analyzer, missed, wrong)
			}
			totals[i][0] += found
			totals[i][1] += false_
			row += fmt.Sprintf(" %d found, %d false |", found, false_)
		}
		fmt.Println(row)
	}
	row := fmt.Sprintf("| **all** (%d / %d) |", leaks, oks)
	for _, t := range totals {
		row += fmt.Sprintf(" **%d found, %d false** |", t[0], t[1])
	}
	fmt.Println(row)
}

func names(ts []tool) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.name)
	}
	return out
}

// cases lists the top-level declarations of the Go files in dir.
func cases(dir string) ([]span, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var out []span
	for _, path := range files {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		split := -1
		for _, cg := range f.Comments {
			if strings.Contains(cg.Text(), marker) {
				split = fset.Position(cg.Pos()).Line
			}
		}
		if split < 0 {
			continue // a file of helpers, not cases
		}
		abs, _ := filepath.Abs(path)
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		lines := strings.Split(string(src), "\n")
		wants := func(from, to int) bool {
			for l := from; l <= to && l <= len(lines); l++ {
				if strings.Contains(lines[l-1], "// want") {
					return true
				}
			}
			return false
		}
		for _, d := range f.Decls {
			start, end := fset.Position(d.Pos()).Line, fset.Position(d.End()).Line
			name := ""
			switch d := d.(type) {
			case *ast.FuncDecl:
				name = d.Name.Name
			case *ast.GenDecl:
				if d.Tok != token.VAR {
					continue // types and imports are not cases
				}
				name = "var"
			}
			leak := start < split
			if leak && !wants(start, end) {
				continue // a helper of the cases around it
			}
			out = append(out, span{file: abs, start: start, end: end, leak: leak, name: name})
		}
	}
	return out, nil
}

// run runs t on pkg and returns the file:line of every finding.
func run(t tool, pkg string) ([]string, error) {
	cmd := exec.Command(t.args[0], append(t.args[1:], pkg)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run() // tools exit non-zero when they find something
	// go vet prints its JSON on stderr, the analysis drivers on stdout;
	// each package is one JSON object, preceded by a "# pkg" line in vet's.
	var lines []string
	for _, src := range [][]byte{stdout.Bytes(), stderr.Bytes()} {
		dec := json.NewDecoder(bytes.NewReader(stripComments(src)))
		for dec.More() {
			var tree map[string]map[string]json.RawMessage
			if err := dec.Decode(&tree); err != nil {
				break
			}
			for _, byAnalyzer := range tree {
				for _, raw := range byAnalyzer {
					var diags []struct {
						Posn string `json:"posn"`
					}
					if json.Unmarshal(raw, &diags) != nil {
						continue // an error object, not findings
					}
					for _, d := range diags {
						lines = append(lines, d.Posn)
					}
				}
			}
		}
	}
	if len(lines) == 0 && stdout.Len() == 0 && strings.Contains(stderr.String(), "cannot") {
		return nil, fmt.Errorf("%s", strings.TrimSpace(stderr.String()))
	}
	return lines, nil
}

// stripComments drops the "# package" lines go vet writes between objects.
func stripComments(b []byte) []byte {
	var out []byte
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("#")) {
			continue
		}
		out = append(out, l...)
	}
	return out
}

// score counts the leak cases with at least one finding and the correct
// cases with any.
func score(spans []span, posns []string) (found, falsePos int, missed, wrong []string) {
	hit := make(map[int]bool)
	for _, p := range posns {
		file, line := splitPosn(p)
		for i, s := range spans {
			if s.file == file && s.start <= line && line <= s.end {
				hit[i] = true
			}
		}
	}
	for i, s := range spans {
		switch {
		case hit[i] && s.leak:
			found++
		case hit[i]:
			falsePos++
			wrong = append(wrong, fmt.Sprintf("%s:%d", s.name, s.start))
		case s.leak:
			missed = append(missed, fmt.Sprintf("%s:%d", s.name, s.start))
		}
	}
	return found, falsePos, missed, wrong
}

// splitPosn splits "file:line:col" into the absolute file and the line.
func splitPosn(p string) (string, int) {
	parts := strings.Split(p, ":")
	if len(parts) < 3 {
		return p, 0
	}
	var line int
	fmt.Sscanf(parts[len(parts)-2], "%d", &line)
	file, _ := filepath.Abs(strings.Join(parts[:len(parts)-2], ":"))
	return file, line
}
