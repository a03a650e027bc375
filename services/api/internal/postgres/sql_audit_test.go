package postgres_test

import (
	"go/ast"
	"go/token"
	"path/filepath"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
)

// TestSQLIsConstant reads every non-test Go file of the module and checks that each
// SQL text handed to Exec, Query, QueryRow or a batch's Queue is built only from string literals and
// package constants, so no client value can reach SQL except as a parameter.
func TestSQLIsConstant(t *testing.T) {
	t.Parallel()
	fset, byDir := apitest.ModuleSource(t, filepath.Join("..", ".."))
	calls := 0
	for _, files := range byDir {
		consts := map[string]bool{}
		for _, f := range files {
			for _, decl := range f.Decls {
				if g, ok := decl.(*ast.GenDecl); ok && g.Tok == token.CONST {
					for _, spec := range g.Specs {
						for _, n := range spec.(*ast.ValueSpec).Names {
							consts[n.Name] = true
						}
					}
				}
			}
		}
		var constant func(ast.Expr) bool
		constant = func(e ast.Expr) bool {
			switch e := e.(type) {
			case *ast.BasicLit:
				return e.Kind == token.STRING
			case *ast.Ident:
				return consts[e.Name]
			case *ast.ParenExpr:
				return constant(e.X)
			case *ast.BinaryExpr:
				return e.Op == token.ADD && constant(e.X) && constant(e.Y)
			}
			return false
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || len(call.Args) < 2 {
					return true
				}
				switch sel.Sel.Name {
				case "Exec", "Query", "QueryRow":
					calls++
					if !constant(call.Args[1]) {
						t.Errorf("%s: SQL of %s is not a constant", fset.Position(call.Pos()), sel.Sel.Name)
					}
				case "Queue": // a pgx.Batch
					calls++
					if !constant(call.Args[0]) {
						t.Errorf("%s: SQL of %s is not a constant", fset.Position(call.Pos()), sel.Sel.Name)
					}
				}
				return true
			})
		}
	}
	if calls < 10 {
		t.Fatalf("found only %d SQL calls: the audit is not reading the store", calls)
	}
}
